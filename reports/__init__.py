"""Reports read a run store and render it. They never import TensorFlow or a back end."""
