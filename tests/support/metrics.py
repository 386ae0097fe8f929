"""Reading a node's /metrics back, with prometheus_client's own parser."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


class Scrape:
    """The samples of one scrape, by name and labels."""

    def __init__(self, text: str) -> None:
        self.families = {family.name: family for family in text_string_to_metric_families(text)}
        self._values = {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in self.families.values()
            for sample in family.samples
        }

    def __call__(self, name: str, **labels: str) -> float:
        """The value of the sample ``name`` with exactly these labels."""
        return self._values[name, frozenset(labels.items())]

    def labelled(self, name: str, label: str) -> dict[str, float]:
        """The samples named ``name``, by the value of their one ``label``."""
        return {dict(labels)[label]: value for (sample, labels), value in self._values.items()
                if sample == name}

    def names(self) -> set[str]:
        return {name for name, _ in self._values}
