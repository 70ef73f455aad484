# Triton kernels of kernels/pairwise_losses.py: each pairwise term and its derivative, picked by a
# compile-time constant inside the one pair kernel. pairwise_losses.py holds the table of losses,
# the launcher, the public functions and the plain-torch references that are the spec.

from __future__ import annotations

from prefcore.kernels._dispatch import HAS_TRITON

if HAS_TRITON:
    import triton
    import triton.language as tl

    from prefcore.kernels._sequence_loss import log_sigmoid
    from prefcore.kernels._sequence_loss import nonfinite
    from prefcore.kernels._sequence_loss import sigmoid

__all__ = ["_pairwise_loss_fwd_kernel"]

if HAS_TRITON:

    @triton.jit
    def _expm1(x):
        # Kahan's expm1: exact-to-a-few-ulps without libdevice (which the interpreter lacks).
        u = tl.exp(x)
        log_u = tl.log(u)
        safe_log_u = tl.where(log_u == 0.0, 1.0, log_u)
        return tl.where(u == 1.0, x, tl.where(u == 0.0, -1.0, (u - 1.0) * x / safe_log_u))

    @triton.jit
    def _log1mexp(a):
        # log(1 - exp(a)) for a < 0, branching at -ln 2 as in Mächler's note, with Kahan's log1p.
        minus_e = -tl.exp(a)
        one_plus = 1.0 + minus_e
        safe_den = tl.where(one_plus == 1.0, 1.0, one_plus - 1.0)
        log1p_minus_e = tl.where(one_plus == 1.0, minus_e, tl.log(one_plus) * minus_e / safe_den)
        return tl.where(a < -0.6931471805599453, log1p_minus_e, tl.log(-_expm1(a)))

    # Each term returns its value and its derivative in the margin (ORPO: in both means).

    @triton.jit
    def _sigmoid_loss(z, label_smoothing):
        loss = -(1.0 - label_smoothing) * log_sigmoid(z) - label_smoothing * log_sigmoid(-z)
        dloss_dz = -(1.0 - label_smoothing) * sigmoid(-z) + label_smoothing * sigmoid(z)
        return loss, dloss_dz

    @triton.jit
    def _dpo_term(margin, beta, label_smoothing):
        loss, dloss_dz = _sigmoid_loss(beta * margin, label_smoothing)
        return loss, beta * dloss_dz

    @triton.jit
    def _ipo_term(margin, beta):
        gap = margin - 0.5 / beta
        return gap * gap, 2.0 * gap

    @triton.jit
    def _hinge_term(margin, beta):
        # The kink gets gradient 0, like torch.relu.
        slack = 1.0 - beta * margin
        return tl.maximum(slack, 0.0), tl.where(slack > 0.0, -beta, 0.0)

    @triton.jit
    def _simpo_term(margin, beta, gamma, label_smoothing):
        loss, dloss_dz = _sigmoid_loss(beta * margin - gamma, label_smoothing)
        return loss, beta * dloss_dz

    @triton.jit
    def _margin_term(margin, beta, label_smoothing, gamma, LOSS: tl.constexpr):
        if LOSS == 0:
            term, dmargin = _dpo_term(margin, beta, label_smoothing)
        elif LOSS == 1:
            term, dmargin = _ipo_term(margin, beta)
        elif LOSS == 2:
            term, dmargin = _hinge_term(margin, beta)
        elif LOSS == 3:
            term, dmargin = _simpo_term(margin, beta, gamma, label_smoothing)
        else:  # NLL: no preference term
            term = tl.zeros_like(margin)
            dmargin = term
        return term, dmargin

    @triton.jit
    def _orpo_term(chosen_mean, rejected_mean, beta):
        # d log_odds / d mean = 1 / (1 - exp(mean)) = -1 / expm1(mean), for either sign.
        log_odds = (chosen_mean - rejected_mean) - (_log1mexp(chosen_mean) - _log1mexp(rejected_mean))
        term = -beta * log_sigmoid(log_odds)
        dlog_odds = -beta * sigmoid(-log_odds)
        return term, -dlog_odds / _expm1(chosen_mean), dlog_odds / _expm1(rejected_mean), log_odds

    @triton.jit
    def _pairwise_loss_fwd_kernel(
        # data ptrs
        sums_ptr,  # [S] fp32 policy sequence sums
        counts_ptr,  # [S] int64 token counts
        ref_sums_ptr,  # [S] fp32 reference sequence sums; read only if HAS_REF
        chosen_index_ptr,  # [P] int
        rejected_index_ptr,  # [P] int
        loss_ptr,  # [1] fp32 out: mean of losses
        losses_ptr,  # [P] fp32 out
        chosen_rewards_ptr,  # [P] fp32 out
        rejected_rewards_ptr,  # [P] fp32 out
        dchosen_ptr,  # [P] fp32 out: d losses[p] / d chosen sum
        drejected_ptr,  # [P] fp32 out: d losses[p] / d rejected sum
        seq_grad_ptr,  # [S] fp32 out: d loss / d sum[s]
        log_odds_ptr,  # [P] fp32 out; written only if ODDS
        terms_ptr,  # [2] fp32 out: the NLL term and the mean per-pair term
        errors_ptr,  # [6] int32 out: bad indices, non-finite policy / reference sums, empty sequences
        #              where a mean is needed, means >= 0 read as odds, no chosen tokens for the NLL
        # shapes
        n_seqs,
        n_pairs,
        # meta
        beta,
        label_smoothing,
        gamma,
        LOSS: tl.constexpr,  # the row's kind: 0 DPO, 1 IPO, 2 hinge, 3 SimPO, 4 ORPO, 5 NLL
        HAS_REF: tl.constexpr,
        PER_TOKEN: tl.constexpr,  # x is a per-token mean
        ODDS: tl.constexpr,  # the term is ORPO's log odds ratio, not a function of the margin
        HAS_NLL: tl.constexpr,  # adds a token average over all chosen tokens
        MEAN_REWARDS: tl.constexpr,
        BLOCK_P: tl.constexpr,
    ):
        # `* 1.0` rather than .to(): Triton turns an int argument equal to 1 into a constexpr.
        pairs = n_pairs * 1.0
        inv_pairs = 1.0 / pairs
        n_bad_index = 0
        n_policy_nonfinite = 0
        n_ref_nonfinite = 0
        n_empty = 0
        n_bad_odds = 0

        # The NLL averages over every chosen token of the batch, so that total has to exist before
        # the first pair's share can be written.
        chosen_tokens = 0.0
        if HAS_NLL:
            for start in range(0, n_pairs, BLOCK_P):
                offs = start + tl.arange(0, BLOCK_P)
                valid = offs < n_pairs
                ci = tl.load(chosen_index_ptr + offs, mask=valid, other=0).to(tl.int64)
                ok = valid & (ci >= 0) & (ci < n_seqs)
                chosen_tokens += tl.sum(tl.load(counts_ptr + ci, mask=ok, other=0).to(tl.float32), axis=0)
        safe_chosen_tokens = tl.maximum(chosen_tokens, 1.0)

        # seq_grad is zeroed here instead of by a memset launch; the barrier orders these stores
        # before the atomics below, which any thread of this program may issue.
        for start in range(0, n_seqs, BLOCK_P):
            offs = start + tl.arange(0, BLOCK_P)
            tl.store(seq_grad_ptr + offs, tl.zeros([BLOCK_P], dtype=tl.float32), mask=offs < n_seqs)
        tl.debug_barrier()

        loss_total = 0.0
        nll_total = 0.0
        term_total = 0.0
        for start in range(0, n_pairs, BLOCK_P):
            offs = start + tl.arange(0, BLOCK_P)
            valid = offs < n_pairs
            ci = tl.load(chosen_index_ptr + offs, mask=valid, other=0).to(tl.int64)
            ri = tl.load(rejected_index_ptr + offs, mask=valid, other=0).to(tl.int64)
            index_ok = (ci >= 0) & (ci < n_seqs) & (ri >= 0) & (ri < n_seqs)
            n_bad_index += tl.sum((valid & ~index_ok).to(tl.int32), axis=0)
            ok = valid & index_ok
            chosen = tl.load(sums_ptr + ci, mask=ok, other=0.0)
            rejected = tl.load(sums_ptr + ri, mask=ok, other=0.0)
            n_policy_nonfinite += tl.sum((ok & (nonfinite(chosen) | nonfinite(rejected))).to(tl.int32), axis=0)

            # x: log-ratio (or plain log-prob) sums, then per-token means.
            if HAS_REF:
                ref_chosen = tl.load(ref_sums_ptr + ci, mask=ok, other=0.0).to(tl.float32)
                ref_rejected = tl.load(ref_sums_ptr + ri, mask=ok, other=0.0).to(tl.float32)
                n_ref_nonfinite += tl.sum((ok & (nonfinite(ref_chosen) | nonfinite(ref_rejected))).to(tl.int32), axis=0)
                chosen_ratio = chosen - ref_chosen
                rejected_ratio = rejected - ref_rejected
            else:
                chosen_ratio = chosen
                rejected_ratio = rejected
            chosen_x = chosen_ratio
            rejected_x = rejected_ratio
            if PER_TOKEN:
                n_chosen = tl.load(counts_ptr + ci, mask=ok, other=1).to(tl.float32)
                n_rejected = tl.load(counts_ptr + ri, mask=ok, other=1).to(tl.float32)
                n_empty += tl.sum((ok & ((n_chosen == 0.0) | (n_rejected == 0.0))).to(tl.int32), axis=0)
                # Division by a zero count only happens on inputs the host rejects afterwards.
                n_chosen = tl.maximum(n_chosen, 1.0)
                n_rejected = tl.maximum(n_rejected, 1.0)
                chosen_x = chosen_ratio / n_chosen
                rejected_x = rejected_ratio / n_rejected

            # The per-pair term and its derivatives in x_chosen and x_rejected.
            if ODDS:
                n_bad_odds += tl.sum((ok & ((chosen_x >= 0.0) | (rejected_x >= 0.0))).to(tl.int32), axis=0)
                # Lanes past P (and rejected inputs) get a harmless stand-in so no log(0) is evaluated.
                chosen_x = tl.where(ok, tl.minimum(chosen_x, -1e-30), -1.0)
                rejected_x = tl.where(ok, tl.minimum(rejected_x, -1e-30), -1.0)
                term, dchosen, drejected, log_odds = _orpo_term(chosen_x, rejected_x, beta)
                tl.store(log_odds_ptr + offs, log_odds, mask=valid)
            else:
                term, dmargin = _margin_term(chosen_x - rejected_x, beta, label_smoothing, gamma, LOSS)
                dchosen = dmargin
                drejected = -dmargin
            if PER_TOKEN:
                dchosen = dchosen / n_chosen
                drejected = drejected / n_rejected
            loss = term
            if HAS_NLL:
                nll_share = -chosen * pairs / safe_chosen_tokens
                loss = term + nll_share
                dchosen = dchosen - pairs / safe_chosen_tokens
                nll_total += tl.sum(tl.where(ok, -chosen, 0.0), axis=0)
            term_total += tl.sum(tl.where(ok, term, 0.0), axis=0)
            if MEAN_REWARDS:
                chosen_reward = beta * chosen_x
                rejected_reward = beta * rejected_x
            else:
                chosen_reward = beta * chosen_ratio
                rejected_reward = beta * rejected_ratio

            loss = tl.where(ok, loss, 0.0)
            dchosen = tl.where(ok, dchosen, 0.0)
            drejected = tl.where(ok, drejected, 0.0)
            tl.store(losses_ptr + offs, loss, mask=valid)
            tl.store(chosen_rewards_ptr + offs, chosen_reward, mask=valid)
            tl.store(rejected_rewards_ptr + offs, rejected_reward, mask=valid)
            tl.store(dchosen_ptr + offs, dchosen, mask=valid)
            tl.store(drejected_ptr + offs, drejected, mask=valid)
            # Atomics because a sequence may appear in several pairs (one chosen vs many rejected).
            tl.atomic_add(seq_grad_ptr + ci, dchosen * inv_pairs, mask=ok)
            tl.atomic_add(seq_grad_ptr + ri, drejected * inv_pairs, mask=ok)
            loss_total += tl.sum(loss, axis=0)

        tl.store(loss_ptr, loss_total * inv_pairs)
        tl.store(terms_ptr, nll_total / safe_chosen_tokens)
        tl.store(terms_ptr + 1, term_total * inv_pairs)
        tl.store(errors_ptr + 0, n_bad_index)
        tl.store(errors_ptr + 1, n_policy_nonfinite)
        tl.store(errors_ptr + 2, n_ref_nonfinite)
        tl.store(errors_ptr + 3, n_empty)
        tl.store(errors_ptr + 4, n_bad_odds)
        if HAS_NLL:
            tl.store(errors_ptr + 5, (chosen_tokens == 0.0).to(tl.int32))
        else:
            tl.store(errors_ptr + 5, 0)
