"""``prefcore disagreement``: where groups of annotators disagree, and how much.

Preference data presupposes a population; aggregating it flattens real disagreement. This
package reads annotator votes with their group attributes (``prefcore.groups``) and reports,
for the groups of one attribute, each item's preference split, agreement within and between
groups (Krippendorff's α), the items with the largest between-group gaps and the categories
where groups disagree most, as markdown plus a heat map of group × category agreement.

- ``stats``: the numbers (``disagreement(records, by)`` → ``Disagreement``);
- ``render``: the markdown, the heat map and the printed summary;
- ``cli``: ``prefcore disagreement``'s arguments to a report.
"""

from __future__ import annotations

from prefcore.disagreement.cli import disagreement_from_cli
from prefcore.disagreement.cli import load_with_participants
from prefcore.disagreement.render import HEAT_MAP
from prefcore.disagreement.render import NUMBERS
from prefcore.disagreement.render import REPORT
from prefcore.disagreement.render import plot_heat_map
from prefcore.disagreement.render import render_markdown
from prefcore.disagreement.render import summary
from prefcore.disagreement.render import write_disagreement_report
from prefcore.disagreement.stats import MIN_ANNOTATORS
from prefcore.disagreement.stats import NO_CATEGORY
from prefcore.disagreement.stats import Agreement
from prefcore.disagreement.stats import CategoryRow
from prefcore.disagreement.stats import Disagreement
from prefcore.disagreement.stats import GroupRow
from prefcore.disagreement.stats import ItemRow
from prefcore.disagreement.stats import agreement_of
from prefcore.disagreement.stats import between_group_alpha
from prefcore.disagreement.stats import disagreement

__all__ = [
    "HEAT_MAP",
    "MIN_ANNOTATORS",
    "NO_CATEGORY",
    "NUMBERS",
    "REPORT",
    "Agreement",
    "CategoryRow",
    "Disagreement",
    "GroupRow",
    "ItemRow",
    "agreement_of",
    "between_group_alpha",
    "disagreement",
    "disagreement_from_cli",
    "load_with_participants",
    "plot_heat_map",
    "render_markdown",
    "summary",
    "write_disagreement_report",
]
