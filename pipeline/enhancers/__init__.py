"""Low-light enhancers (Zero-DCE, Zero-DCE++, SCI, gamma, none): build, import the authors'
weights, fit zero-reference on the dataset's own dark frames, apply, preview.

One module per family registers its kinds (`registry.register`) where it defines them; they
are imported here, so importing anything from this package registers every kind, and `get`
and `names` (here, beside those imports) see them all. A module that looks a kind up takes
`get` from here: a stage's code is derived from its imports, so it counts every family's.
Nothing here imports torch.
"""
from . import zero_dce, sci, gamma  # noqa: F401, I001 -- registration order: the order `names()` lists
from ..config import Config, ConfigError, EnhancerConfig, explicit_keys
from .registry import KINDS, EnhancerKind


def names() -> tuple[str, ...]:
    """Every registered enhancer.kind, in registration order."""
    return tuple(KINDS)


def get(name: str) -> EnhancerKind:
    """The kind registered as `name`; any other name is enhancer.kind's one-line ConfigError."""
    if name not in KINDS:
        raise ConfigError(f"enhancer.kind: {name!r} is not one of {', '.join(names())}")
    return KINDS[name]


def check(section: EnhancerConfig) -> None:
    """The [enhancer] checks that `config.validate` cannot make (config sits below this package):
    the kind is registered, and a kind with weights is given the file to import or fine-tune."""
    if get(section.kind).learned and section.mode in ("finetune", "import") and not section.weights:
        raise ConfigError(f"enhancer.mode={section.mode} needs enhancer.weights = PATH")


def apply_kind_defaults(cfg: Config) -> None:
    """Set the [enhancer] keys whose default follows enhancer.kind (`EnhancerKind.defaults`) to the
    kind's value, or back to the section's default for a kind without one; a key the user set
    (`config.explicit_keys`) keeps its value. Called again after an override changes the kind."""
    base = EnhancerConfig()
    own = dict(get(cfg.enhancer.kind).defaults)
    followers = {key for kind in KINDS.values() for key, _ in kind.defaults}
    for dotted in sorted(followers - explicit_keys(cfg)):
        key = dotted.split(".", 1)[1]
        setattr(cfg.enhancer, key, own[dotted](cfg.enhancer) if dotted in own else getattr(base, key))
