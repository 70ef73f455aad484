# Triton kernels of kernels/kl.py: the per-token KL estimators and the blocked full-distribution
# divergences (reverse KL, forward KL, generalised JSD). kl.py holds their launchers, autograd
# functions and the plain-torch references that are the spec.

from __future__ import annotations

from prefcore.kernels._dispatch import HAS_TRITON

if HAS_TRITON:
    import triton
    import triton.language as tl

__all__ = [
    "_distribution_kl_bwd_kernel",
    "_distribution_kl_fwd_kernel",
    "_per_token_kl_bwd_kernel",
    "_per_token_kl_fwd_kernel",
]

if HAS_TRITON:

    @triton.jit
    def _k3_of_log_ratio(u):
        # Below |u| = 0.5 the direct exp(u) - u - 1 ~ u^2/2 loses most of its fp32 digits to
        # cancellation; the degree-8 Taylor polynomial there is good to ~1e-7 relative.
        taylor = (
            u
            * u
            * (
                0.5
                + u
                * (
                    1.0 / 6.0
                    + u * (1.0 / 24.0 + u * (1.0 / 120.0 + u * (1.0 / 720.0 + u * (1.0 / 5040.0 + u / 40320.0))))
                )
            )
        )
        direct = tl.exp(u) - u - 1.0
        return tl.where(tl.abs(u) < 0.5, taylor, direct)

    @triton.jit
    def _per_token_kl_fwd_kernel(
        # data ptrs
        logps_ptr,  # [n] policy log-probs
        ref_logps_ptr,  # [n] reference log-probs
        mask_ptr,  # [n] nonzero = keep; read only if HAS_MASK
        kl_ptr,  # [n] fp32 out
        # shapes
        n_elements,
        # strides: none, the launcher passes flattened contiguous tensors
        # meta
        ESTIMATOR: tl.constexpr,
        HAS_MASK: tl.constexpr,
        BLOCK: tl.constexpr,
    ):
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        valid = offs < n_elements
        # Masked tokens are never loaded, so padding that holds nan/inf cannot leak in.
        valid_keep = valid & (tl.load(mask_ptr + offs, mask=valid, other=0) != 0) if HAS_MASK else valid
        logp = tl.load(logps_ptr + offs, mask=valid_keep, other=0.0).to(tl.float32)
        ref = tl.load(ref_logps_ptr + offs, mask=valid_keep, other=0.0).to(tl.float32)
        delta = logp - ref
        if ESTIMATOR == 1:
            kl = delta
        elif ESTIMATOR == 2:
            kl = 0.5 * delta * delta
        else:
            kl = _k3_of_log_ratio(-delta)
        tl.store(kl_ptr + offs, tl.where(valid_keep, kl, 0.0), mask=valid)

    @triton.jit
    def _per_token_kl_bwd_kernel(
        # data ptrs
        grad_kl_ptr,  # [n] fp32 upstream gradient
        logps_ptr,  # [n]
        ref_logps_ptr,  # [n]
        mask_ptr,  # [n]; read only if HAS_MASK
        grad_logps_ptr,  # [n] out, dtype of logps; written only if NEEDS_POLICY_GRAD
        grad_ref_ptr,  # [n] out, dtype of ref_logps; written only if NEEDS_REF_GRAD
        # shapes
        n_elements,
        # meta
        ESTIMATOR: tl.constexpr,
        HAS_MASK: tl.constexpr,
        NEEDS_POLICY_GRAD: tl.constexpr,
        NEEDS_REF_GRAD: tl.constexpr,
        BLOCK: tl.constexpr,
    ):
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        valid = offs < n_elements
        valid_keep = valid & (tl.load(mask_ptr + offs, mask=valid, other=0) != 0) if HAS_MASK else valid
        logp = tl.load(logps_ptr + offs, mask=valid_keep, other=0.0).to(tl.float32)
        ref = tl.load(ref_logps_ptr + offs, mask=valid_keep, other=0.0).to(tl.float32)
        grad = tl.load(grad_kl_ptr + offs, mask=valid_keep, other=0.0).to(tl.float32)
        delta = logp - ref
        if ESTIMATOR == 1:
            dkl_dlogp = tl.full(delta.shape, 1.0, tl.float32)
        elif ESTIMATOR == 2:
            dkl_dlogp = delta
        else:
            # d/dlogp [exp(u) - u - 1] with u = ref - logp is 1 - exp(u) = -(k3(u) + u); reusing
            # the accurate k3 keeps the small-|u| gradient free of cancellation too.
            u = -delta
            dkl_dlogp = -(_k3_of_log_ratio(u) + u)
        dlogp = tl.where(valid_keep, grad * dkl_dlogp, 0.0)
        if NEEDS_POLICY_GRAD:
            tl.store(grad_logps_ptr + offs, dlogp.to(grad_logps_ptr.dtype.element_ty), mask=valid)
        if NEEDS_REF_GRAD:
            # Every estimator depends on logp - ref only, so d/dref = -d/dlogp.
            tl.store(grad_ref_ptr + offs, (-dlogp).to(grad_ref_ptr.dtype.element_ty), mask=valid)

    @triton.jit
    def _log_add_exp(u, v):
        hi = tl.maximum(u, v)
        safe_hi = tl.where(hi == -float("inf"), 0.0, hi)
        return safe_hi + tl.log(tl.exp(u - safe_hi) + tl.exp(v - safe_hi))

    @triton.jit
    def _distribution_kl_fwd_kernel(
        # data ptrs
        logits_ptr,  # [N, V] policy logits
        ref_logits_ptr,  # [N, V] reference logits
        row_mask_ptr,  # [N] nonzero = keep; read only if HAS_MASK
        div_ptr,  # [N] fp32 out: divergence per row
        stats_ptr,  # [6, N] fp32 out: max and log Σ exp(· - max) of logits / T, the same of
        #             ref_logits / T, then KL(p || m) and KL(r || m) (JSD only, else 0)
        # shapes
        V,
        # strides
        stride_logits_row,
        stride_ref_row,
        stride_stats,
        # meta
        inv_temperature,
        beta,
        MODE: tl.constexpr,
        HAS_MASK: tl.constexpr,
        BLOCK_V: tl.constexpr,
    ):
        row = tl.program_id(0).to(tl.int64)
        logits_row = logits_ptr + row * stride_logits_row
        ref_row = ref_logits_ptr + row * stride_ref_row
        keep = tl.load(row_mask_ptr + row) != 0 if HAS_MASK else row >= 0
        # A masked row runs zero iterations: neither logits row is read.
        n_cols = tl.where(keep, V, 0)

        neg_inf = -float("inf")
        max_x = neg_inf
        max_y = neg_inf
        sum_x = 0.0
        sum_y = 0.0
        # Σ exp(x - max_x) (x - y) for reverse KL, Σ exp(y - max_y) (y - x) for forward KL.
        weighted = 0.0
        for start in range(0, n_cols, BLOCK_V):
            cols = start + tl.arange(0, BLOCK_V)
            in_row = cols < V
            # Lanes past V load 0 (finite, so x - y stays finite there) and are sent to -inf
            # only where they enter the max and the sums.
            x = tl.load(logits_row + cols, mask=in_row, other=0.0).to(tl.float32) * inv_temperature
            y = tl.load(ref_row + cols, mask=in_row, other=0.0).to(tl.float32) * inv_temperature
            x_or_neg_inf = tl.where(in_row, x, neg_inf)
            y_or_neg_inf = tl.where(in_row, y, neg_inf)
            new_max_x = tl.maximum(max_x, tl.max(x_or_neg_inf, axis=0))
            new_max_y = tl.maximum(max_y, tl.max(y_or_neg_inf, axis=0))
            # Shifting by 0 instead of -inf keeps a block of -inf logits (a banned vocabulary
            # range) from producing exp(-inf - -inf) = nan.
            shift_x = tl.where(new_max_x == neg_inf, 0.0, new_max_x)
            shift_y = tl.where(new_max_y == neg_inf, 0.0, new_max_y)
            exp_x = tl.exp(x_or_neg_inf - shift_x)
            exp_y = tl.exp(y_or_neg_inf - shift_y)
            rescale_x = tl.exp(max_x - shift_x)
            rescale_y = tl.exp(max_y - shift_y)
            sum_x = sum_x * rescale_x + tl.sum(exp_x, axis=0)
            sum_y = sum_y * rescale_y + tl.sum(exp_y, axis=0)
            if MODE == 0:
                # p = 0 entries contribute 0 (0 log 0 = 0) even where y is -inf.
                weighted = weighted * rescale_x + tl.sum(tl.where(exp_x > 0, exp_x * (x - y), 0.0), axis=0)
            elif MODE == 1:
                weighted = weighted * rescale_y + tl.sum(tl.where(exp_y > 0, exp_y * (y - x), 0.0), axis=0)
            max_x = new_max_x
            max_y = new_max_y

        # Masked rows ran no iterations; give them finite placeholders so nothing below is nan.
        max_x = tl.where(keep, max_x, 0.0)
        max_y = tl.where(keep, max_y, 0.0)
        safe_sum_x = tl.where(keep, sum_x, 1.0)
        safe_sum_y = tl.where(keep, sum_y, 1.0)
        # The LSE is kept as (max, log Σ exp(x - max)) and log p formed as (x - max) - log_sum, as
        # log_softmax does: one fp32 LSE near 1e4 carries an absolute error of ~5e-4, and
        # p = exp(x - lse) would inherit it as a relative error.
        log_sum_x = tl.log(safe_sum_x)
        log_sum_y = tl.log(safe_sum_y)
        kl_p_m = 0.0
        kl_r_m = 0.0
        if MODE == 2:
            # log m = log((1 - beta) p + beta r) needs both final normalisers, so the generalised
            # JSD takes a second pass over the row (usually served from L2 for one row).
            log_one_minus_beta = tl.log(1.0 - beta)
            log_beta = tl.log(beta)
            for start in range(0, n_cols, BLOCK_V):
                cols = start + tl.arange(0, BLOCK_V)
                in_row = cols < V
                x = tl.load(logits_row + cols, mask=in_row, other=0.0).to(tl.float32) * inv_temperature
                y = tl.load(ref_row + cols, mask=in_row, other=0.0).to(tl.float32) * inv_temperature
                log_p = (x - max_x) - log_sum_x
                log_r = (y - max_y) - log_sum_y
                log_m = _log_add_exp(log_p + log_one_minus_beta, log_r + log_beta)
                p = tl.where(in_row, tl.exp(log_p), 0.0)
                r = tl.where(in_row, tl.exp(log_r), 0.0)
                kl_p_m += tl.sum(tl.where(p > 0, p * (log_p - log_m), 0.0), axis=0)
                kl_r_m += tl.sum(tl.where(r > 0, r * (log_r - log_m), 0.0), axis=0)
            divergence = beta * kl_r_m + (1.0 - beta) * kl_p_m
        else:
            # lse_x - lse_y as (max_x - max_y) + log(sum_x / sum_y): each term is small when the two
            # distributions are close, so the difference keeps its digits instead of cancelling.
            lse_gap = (max_x - max_y) + tl.log(safe_sum_x / safe_sum_y)
            divergence = weighted / safe_sum_x - lse_gap if MODE == 0 else weighted / safe_sum_y + lse_gap
        tl.store(div_ptr + row, tl.where(keep, divergence, 0.0))
        tl.store(stats_ptr + row, max_x)
        tl.store(stats_ptr + stride_stats + row, log_sum_x)
        tl.store(stats_ptr + 2 * stride_stats + row, max_y)
        tl.store(stats_ptr + 3 * stride_stats + row, log_sum_y)
        tl.store(stats_ptr + 4 * stride_stats + row, tl.where(keep, kl_p_m, 0.0))
        tl.store(stats_ptr + 5 * stride_stats + row, tl.where(keep, kl_r_m, 0.0))

    @triton.jit
    def _distribution_kl_bwd_kernel(
        # data ptrs
        grad_div_ptr,  # [N] fp32 upstream gradient
        logits_ptr,  # [N, V]
        ref_logits_ptr,  # [N, V]
        row_mask_ptr,  # [N]; read only if HAS_MASK
        div_ptr,  # [N] fp32 saved divergence
        stats_ptr,  # [6, N] fp32 saved row statistics (see the forward)
        grad_logits_ptr,  # [N, V] out, dtype of logits; written only if NEEDS_POLICY_GRAD
        grad_ref_ptr,  # [N, V] out, dtype of ref_logits; written only if NEEDS_REF_GRAD
        # shapes
        V,
        # strides
        stride_logits_row,
        stride_ref_row,
        stride_grad_row,
        stride_grad_ref_row,
        stride_stats,
        # meta
        inv_temperature,
        beta,
        MODE: tl.constexpr,
        HAS_MASK: tl.constexpr,
        NEEDS_POLICY_GRAD: tl.constexpr,
        NEEDS_REF_GRAD: tl.constexpr,
        BLOCK_V: tl.constexpr,
    ):
        row = tl.program_id(0).to(tl.int64)
        logits_row = logits_ptr + row * stride_logits_row
        ref_row = ref_logits_ptr + row * stride_ref_row
        grad_row = grad_logits_ptr + row * stride_grad_row
        grad_ref_row = grad_ref_ptr + row * stride_grad_ref_row
        keep = tl.load(row_mask_ptr + row) != 0 if HAS_MASK else row >= 0
        # Temperature enters as x / T, hence the extra 1/T on both gradients.
        scale = tl.load(grad_div_ptr + row).to(tl.float32) * inv_temperature
        divergence = tl.load(div_ptr + row)
        max_x = tl.load(stats_ptr + row)
        log_sum_x = tl.load(stats_ptr + stride_stats + row)
        max_y = tl.load(stats_ptr + 2 * stride_stats + row)
        log_sum_y = tl.load(stats_ptr + 3 * stride_stats + row)
        kl_p_m = tl.load(stats_ptr + 4 * stride_stats + row)
        kl_r_m = tl.load(stats_ptr + 5 * stride_stats + row)
        if MODE == 2:
            log_one_minus_beta = tl.log(1.0 - beta)
            log_beta = tl.log(beta)
        # Masked rows still get their zero gradient written, but their logits are never read.
        read_len = tl.where(keep, V, 0)
        for start in range(0, V, BLOCK_V):
            cols = start + tl.arange(0, BLOCK_V)
            in_row = cols < V
            x = tl.load(logits_row + cols, mask=cols < read_len, other=0.0).to(tl.float32) * inv_temperature
            y = tl.load(ref_row + cols, mask=cols < read_len, other=0.0).to(tl.float32) * inv_temperature
            log_p = (x - max_x) - log_sum_x
            log_r = (y - max_y) - log_sum_y
            p = tl.exp(log_p)
            r = tl.exp(log_r)
            if MODE == 0:
                # KL(p||r) = Σ p (log p - log r):  d/dx_j = p_j (log p_j - log r_j - KL),  d/dy_j = r_j - p_j
                dx = tl.where(p > 0, p * ((log_p - log_r) - divergence), 0.0)
                dy = r - p
            elif MODE == 1:
                # KL(r||p) = Σ r (log r - log p):  d/dx_j = p_j - r_j,  d/dy_j = r_j (log r_j - log p_j - KL)
                dx = p - r
                dy = tl.where(r > 0, r * ((log_r - log_p) - divergence), 0.0)
            else:
                # J = (1-β) KL(p||m) + β KL(r||m), m = (1-β) p + β r:
                # d/dx_j = (1-β) p_j (log p_j - log m_j - KL(p||m)), and symmetrically for y.
                log_m = _log_add_exp(log_p + log_one_minus_beta, log_r + log_beta)
                dx = tl.where(p > 0, (1.0 - beta) * p * (log_p - log_m - kl_p_m), 0.0)
                dy = tl.where(r > 0, beta * r * (log_r - log_m - kl_r_m), 0.0)
            if NEEDS_POLICY_GRAD:
                dx = tl.where(keep, dx * scale, 0.0)
                tl.store(grad_row + cols, dx.to(grad_logits_ptr.dtype.element_ty), mask=in_row)
            if NEEDS_REF_GRAD:
                dy = tl.where(keep, dy * scale, 0.0)
                tl.store(grad_ref_row + cols, dy.to(grad_ref_ptr.dtype.element_ty), mask=in_row)
