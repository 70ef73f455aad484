"""PRO: preference ranking optimisation, a listwise softmax over the suffixes of a ranking.

Song et al. 2024 (AAAI), "Preference Ranking Optimization for Human Alignment",
https://arxiv.org/abs/2306.17492, Eqs. 5-8.

    s_i   = (1/|y_i|)·Σ_t log π(y_i,t | x, y_i,<t)                    (length-normalised score)
    L_PRO = −Σ_{k=1}^{n−1} log [ exp(s_k) / Σ_{i=k}^{n} exp(s_i) ]
    L_SFT = −s_1
    loss  = L_PRO + β·L_SFT                                            (per ranked list)

y_1 ≻ y_2 ≻ … ≻ y_n: the completions of one prompt, best first; |y|: number of completion
tokens; π: the policy; β: weight of the SFT term on the best completion. Each completion
must win a softmax against every completion ranked below it: DPO's pairwise contrast
extended to a whole ranking. Tied completions share one softmax denominator (Breslow),
so their order does not matter.

Scored lists (``use_scores``, on by default): when the feedback scores the completions
(ratings, a reward model's rewards r_i, in ``LogProbBatch.scores``), the paper's "PRO with
RLHF" tempers each softmax by the reward gaps (section "Grafting RLHF onto PRO"; the
authors' ``compute_loss`` in AlibabaResearch/DAMO-ConvAI, PRO/train/utils/process_manager.py):

    T_k^i = r_k − r_i  (i > k),   T_k^k = max_{i>k} T_k^i
    L_PRO = −Σ_{k=1}^{n−1} log [ exp(T_k^k·s_k) / (exp(T_k^k·s_k) + Σ_{i>k} exp(T_k^i·s_i)) ]

(the paper writes 1/𝒯 for these factors). A completion far below y_k in reward is pushed
down harder in y_k's softmax. A completion tied with y_k takes y_k's own factor T_k^k, so
the order within a tie still does not matter. Lists without scores (rankings, pairs) keep
the plain loss, as does everything with ``use_scores = false``; the scores must fall
strictly down the ranking (the engine orders scored lists by them).
"""

from __future__ import annotations

from dataclasses import dataclass

from prefcore import hookimpl
from prefcore.batch import LogProbBatch
from prefcore.lazy import lazy_module
from prefcore.methods import UsageObjective
from prefcore.methods import check_non_negative
from prefcore.methods import option
from prefcore.objectives import ListwiseObjective
from prefcore.objectives import Metrics
from prefcore.objectives import list_scores
from prefcore.objectives import mean_or_zero
from prefcore.objectives import policy_sequence_logps

torch = lazy_module("torch")


@dataclass(frozen=True)
class PROConfig:
    sft_weight: float = option(0.05, doc="β: weight of the average-token NLL of the top-ranked completion")
    use_scores: bool = option(
        True, doc="scored lists temper each softmax by the reward gaps r_k − r_i (the paper's PRO with RLHF)"
    )

    def __post_init__(self) -> None:
        check_non_negative("pro", "sft_weight", self.sft_weight)


class PRO(ListwiseObjective):
    """PRO: each completion wins a softmax over those ranked below it, plus SFT on the best."""

    name = "pro"
    config_cls = PROConfig

    def implicit_reward_beta(self) -> None:
        """None: the scores it ranks are mean token log-probs, not β-scaled log-ratios."""
        return None

    def sequence_scores(self, batch: LogProbBatch) -> torch.Tensor:
        return policy_sequence_logps(batch, average=True)

    def list_loss(
        self, scores: torch.Tensor, ranks: torch.Tensor, valid: torch.Tensor, batch: LogProbBatch
    ) -> tuple[torch.Tensor, Metrics]:
        rewards = list_scores(batch, self.name) if self.config.use_scores else None
        ranking_losses = pro_ranking_losses(scores, ranks, valid, rewards)
        sft_losses = -scores[:, 0]
        losses = ranking_losses + self.config.sft_weight * sft_losses
        return losses, {"ranking_loss": mean_or_zero(ranking_losses), "nll": mean_or_zero(sft_losses)}


def pro_ranking_losses(
    scores: torch.Tensor, ranks: torch.Tensor, valid: torch.Tensor, rewards: torch.Tensor | None = None
) -> torch.Tensor:
    """``[L]`` L_PRO of each list: ``[L, K]`` policy scores s, ranks (1 = best), validity and feedback rewards.

    Item k with at least one item ranked strictly below it contributes
    logsumexp_j(w_kj·s_j) − w_kk·s_k over the items j ranked no better than k. Without
    rewards (or in a list with a missing reward) every w is 1: the Plackett–Luce terms of
    ``plackett_luce_nll``. With rewards, w_kj = r_k − r_j for j strictly below k and
    w_kj = max_i (r_k − r_i) for k itself and items tied with it.
    """
    ranks_k, ranks_j = ranks.unsqueeze(-1), ranks.unsqueeze(-2)
    valid_j = valid.unsqueeze(-2)
    diagonal = torch.eye(scores.shape[-1], dtype=torch.bool, device=scores.device)
    worse = (ranks_j > ranks_k) & valid_j & valid.unsqueeze(-1)  # [L, K, K]: j ranked strictly below k
    competitors = ((ranks_j >= ranks_k) & valid_j) | diagonal  # the item itself keeps padding rows finite
    has_worse = worse.any(-1)
    weights = torch.ones_like(competitors, dtype=scores.dtype)
    if rewards is not None:
        rewards = rewards.to(scores.dtype)
        scored = (~torch.isnan(rewards) | ~valid).all(-1)  # [L]: every item of the list has a reward
        gaps = rewards.unsqueeze(-1) - rewards.unsqueeze(-2)  # r_k − r_j
        tempered = worse & scored[:, None, None]
        if not bool((gaps[tempered] > 0).all()):
            raise ValueError(
                "objective 'pro': batch.scores must fall strictly down each list's ranking (list_ranks); "
                "a completion ranked below another scores as high or higher."
            )
        top = torch.where(tempered, gaps, torch.zeros_like(gaps)).amax(-1, keepdim=True)  # T_k^k
        own = competitors & ~worse & scored[:, None, None] & has_worse.unsqueeze(-1)  # k itself and its ties
        weights = torch.where(tempered, gaps, torch.where(own, top.expand_as(gaps), weights))
    logits = weights * scores.unsqueeze(-2)
    log_denominator = torch.logsumexp(torch.where(competitors, logits, torch.full_like(logits, float("-inf"))), -1)
    own_logits = torch.diagonal(logits, dim1=-2, dim2=-1)
    terms = torch.where(has_worse, log_denominator - own_logits, torch.zeros_like(scores))
    return terms.sum(-1)


@hookimpl
def prefcore_register_usage_objectives() -> list[type[UsageObjective]]:
    return [PRO]
