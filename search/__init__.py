"""Runs searches: data, trial runner, back ends, run store and export."""
