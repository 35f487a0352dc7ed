"""The errors this plugin reports, and the typed option checks that raise them.

The bottom of the package: it imports nothing from it, so every module can import it.
"""

import math


class RecBoleDiffusionError(ValueError):
    """Base class of the errors this plugin reports as one paragraph, without a traceback."""


class ConfigError(RecBoleDiffusionError):
    """A configuration option is missing, of the wrong type or impossible."""


class DataError(RecBoleDiffusionError):
    """A dataset is missing or an atomic file is malformed."""


class OptionChecks:
    """Typed checks of a model's options for ``check_config``; each returns the value or raises
    a ``ConfigError`` that names the option and what it allows."""

    def __init__(self, config):
        self.get = config.final_config_dict.get

    def integer(self, key, minimum, maximum=None, note=None):
        """An integer >= ``minimum`` (and <= ``maximum`` when given)."""
        value = self.get(key)
        too_big = maximum is not None and isinstance(value, int) and value > maximum
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum or too_big:
            bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
            raise ConfigError(f"{key}: must be an integer {bound}{_note(note)}; got {value!r}")
        return value

    def number(self, key, low, high=float("inf"), low_open=False, high_open=False, note=None):
        """A finite number in [low, high] (an open end with ``low_open`` / ``high_open``)."""
        value = self.get(key)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        ok = ok and (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
        if not ok:
            bound = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
            raise ConfigError(f"{key}: must be a number in {bound}{_note(note)}; got {value!r}")
        return value

    def boolean(self, key):
        if not isinstance(self.get(key), bool):
            raise ConfigError(f"{key}: must be True or False; got {self.get(key)!r}")
        return self.get(key)

    def transformer(self, heads=("n_heads",), dropouts=("hidden_dropout_prob", "attn_dropout_prob")):
        """A transformer encoder's shape: ``n_layers``, ``hidden_size``, ``inner_size`` (when set)
        and each key of ``heads`` positive integers, each head count dividing ``hidden_size``; each
        key of ``dropouts`` a probability in [0, 1)."""
        self.integer("n_layers", 1)
        self.integer("hidden_size", 1)
        if self.get("inner_size") is not None:
            self.integer("inner_size", 1)
        for key in heads:
            self.integer(key, 1)
            self.divides_hidden_size(key)
        for key in dropouts:
            self.number(key, 0.0, 1.0, high_open=True)

    def divides_hidden_size(self, key):
        """A head count ``key`` that divides ``hidden_size`` (both already checked positive)."""
        hidden, count = self.get("hidden_size"), self.get(key)
        if hidden % count:
            raise ConfigError(f"{key}: must divide hidden_size ({hidden}); got {count}")
        return count

    def no_negative_sampling(self, reason):
        """``train_neg_sample_args`` off (None or distribution none); ``reason`` says why."""
        negatives = self.get("train_neg_sample_args")
        if negatives is not None and negatives.get("distribution", "none") != "none":
            raise ConfigError(f"train_neg_sample_args: {reason}; set it to None (~)")

    def refuse_renamed(self, renamed):
        """Refuse every option of ``renamed`` (earlier name -> what to use now) that is set."""
        for old, new in renamed.items():
            if self.get(old) is not None:
                raise ConfigError(f"{old}: {new}")

    def choice(self, key, allowed, note=None):
        if self.get(key) not in allowed:
            raise ConfigError(f"{key}: must be one of {', '.join(map(str, allowed))}{_note(note)}; got {self.get(key)!r}")
        return self.get(key)


def _note(note):
    """What an option means, in parentheses after the allowed values of an OptionChecks message."""
    return f" ({note})" if note else ""
