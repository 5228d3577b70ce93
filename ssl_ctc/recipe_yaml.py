"""A recipe YAML read without building anything: a training YAML or the ``hyperparams.yaml``
SpeechBrain saves in an experiment folder (its references resolved, objects as aliases).

It is parsed as hyperpyyaml parses it (ruamel, YAML 1.2) and nothing is built: no encoder,
no hub. The grid, the distillation checks, the inference folder's loader and writer read
YAML files through here; this module imports nothing of the recipe.

Usage::

    saved = read_yaml_keys("results/demo/SD2/hyperparams.yaml")
    saved["downsampling_factor"], saved["brain_class"]  # 2, '!name:ssl_ctc.downsampling...'
"""

from pathlib import Path

import ruamel.yaml


def parse_recipe_yaml(text):
    """The YAML document as ruamel's round-trip tree: tags, aliases and order kept.

    An alias is the very object of its anchor, so a block of a saved YAML can tell
    which top-level key a reference pointed to. Raises ``ruamel.yaml.YAMLError`` when
    it is not YAML.

    Example
    -------
    >>> tree = parse_recipe_yaml("dim: &id1 !apply:len [[1, 2]]\\nshape: [null, *id1]\\n")
    >>> tree["shape"][1] is tree["dim"], tree["dim"].tag.value
    (True, '!apply:len')
    """
    return ruamel.yaml.YAML().load(text)


def plain(value):
    """A ruamel value as plain Python; a tagged value as its tag (and value).

    Example
    -------
    >>> plain(parse_recipe_yaml("a: !apply:torch.manual_seed [1986]\\nb: 2\\nc: !name:len"))
    {'a': ('!apply:torch.manual_seed', [1986]), 'b': 2, 'c': '!name:len'}
    """
    tag = getattr(getattr(value, "tag", None), "value", None)
    if isinstance(value, ruamel.yaml.comments.TaggedScalar):
        return f"{tag} {value.value}".strip()
    if isinstance(value, dict):
        value = {key: plain(item) for key, item in value.items()}
    elif isinstance(value, list):
        value = [plain(item) for item in value]
    elif isinstance(value, float):
        value = float(value)
    return (tag, value) if tag else value


def read_yaml_keys(path):
    r"""The top-level keys of a (hyperpyyaml) YAML file as plain values, tags kept.

    Raises ``OSError`` when the file cannot be read and ``ruamel.yaml.YAMLError`` when it is
    not YAML.

    Example
    -------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = Path(folder) / "hyperparams.yaml"
    ...     _ = path.write_text("seed: 1986\nbrain_class: !name:ssl_ctc.brain.SSLCTCBrain\n")
    ...     read_yaml_keys(path)
    {'seed': 1986, 'brain_class': '!name:ssl_ctc.brain.SSLCTCBrain'}
    """
    return plain(parse_recipe_yaml(Path(path).read_text(encoding="utf-8")))
