"""What a space needs to know about the data and the machine to build a model."""

from __future__ import annotations

from dataclasses import dataclass, replace

# A backbone's variant: the keyword arguments its builder takes besides the input shape and the
# weights (MobileNetV2's alpha), as sorted (name, value) pairs so a context stays hashable.
Variant = tuple[tuple[str, float | int | str | bool], ...]


@dataclass(frozen=True)
class BackboneWeights:
    """A pretrained base as the run resolved it before any trial (spaces/backbones.py): which
    network, which weights, and the variant those weights fit, in one value so every build of
    the run agrees and no caller threads them separately.

    `name` is a key of spaces.backbones.BACKBONES; `weights` is "imagenet" (Keras's cache), an
    absolute path to a weights file, or None (random weights: enough to learn which
    hyperparameters a space declares).
    """

    name: str
    weights: str | None
    variant: Variant = ()

    @property
    def options(self) -> dict[str, float | int | str | bool]:
        """The variant as the builder's keyword arguments (and as run.json records it)."""
        return dict(self.variant)

    def with_weights(self, weights: str | None) -> BackboneWeights:
        """The same network and variant with other weights (None: random)."""
        return replace(self, weights=weights)


# The documents' backbone, and what a run that never builds one records: MobileNetV2 at the
# width Keras's ImageNet weights default to.
DEFAULT_BACKBONE = BackboneWeights("mobilenet_v2", "imagenet", (("alpha", 1.0),))


@dataclass(frozen=True)
class SpaceContext:
    """Facts fixed for a whole run, handed to every `build(hp, ctx)` call.

    `backbones` are the pretrained bases a space under the BACKBONE contract chooses among
    (--backbones), each resolved with its weights once per run; `backbone` is the default
    choice, and the only one when `backbones` is empty. `train_steps` is the optimizer steps
    of a trial trained for all its --epochs (what a learning-rate schedule decays over), 0
    when unknown.
    """

    image_size: int
    num_classes: int
    backbone: BackboneWeights = DEFAULT_BACKBONE
    train_steps: int = 0
    backbones: tuple[BackboneWeights, ...] = ()

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.image_size, self.image_size, 3)

    @property
    def backbone_choices(self) -> tuple[BackboneWeights, ...]:
        """The bases to choose among, the default among them."""
        return self.backbones or (self.backbone,)

    def backbone_named(self, name: str) -> BackboneWeights:
        """The resolved choice called `name` (a key of spaces.backbones.BACKBONES)."""
        return next(choice for choice in self.backbone_choices if choice.name == name)

    def without_weights(self) -> SpaceContext:
        """The same context with every base at random weights: enough to learn which
        hyperparameters a space declares, without reading any weights file."""
        return replace(
            self,
            backbone=self.backbone.with_weights(None),
            backbones=tuple(choice.with_weights(None) for choice in self.backbones),
        )
