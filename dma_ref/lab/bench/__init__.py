"""The project's benchmark: DMA's Triton kernel against every anchor, on the same inputs.

    python -m dma_ref.lab.bench                                   # the full grid of DESIGN.md 6
    python -m dma_ref.lab.bench --n 4096 16384 --window 1024 --d 128 --methods dma_triton sdpa_cudnn

Methods (one process, the same q, k, v, s for all of them):

==================== =======================================================================
``dma_triton``       ``dma_ref.kernels.dma_attention(q, k, v, s, w)``; the mask is built
                     inside the call and its time is included (the builder alone is timed
                     too and reported in the note)
``sdpa_cudnn``       SDPA, cuDNN backend, dense causal, no bias (independent of w)
``sdpa_flash``       SDPA, FlashAttention-2 backend, dense causal, no bias (independent of w)
``sdpa_efficient_bias`` SDPA, mem-efficient backend, dense additive bias ``s_j`` on kept
                     pairs and ``-inf`` elsewhere (the official repo's baseline)
``flex_blockmask``   compiled FlexAttention; BlockMask from the DMA mask in lifetime form
                     (``kv <= q < e[kv]``), ``s`` through ``score_mod``
``official_triton``  flash-sparse-attn 1.2.x Triton kernel with the DMA mask as a dense bool
                     ``[B, Hkv, N, N]`` tensor, when that package is importable
==================== =======================================================================

Each record has exactly the keys of ``RECORD_KEYS``. Times are medians of CUDA-event timings
(L2 flushed before each repetition) of a training-mode forward (inputs require grad) and of
forward + backward (gradients of q, k, v and, where the method supports it, s). ``peak_mem_bytes``
is the peak of ``torch.cuda.max_memory_allocated`` above what was allocated before the method
was prepared (so the shared inputs are excluded, and anything the method builds - masks,
biases, block masks, outputs, gradients - is included). A method that runs out of memory, is
predicted to exceed ``--time-cap``, or fails, is still recorded with null times and the reason.

Modules: ``records`` (the record schema, files, the grid), ``timing`` (the timer, CUDA graphs),
``inputs`` (the shared inputs and the masks the O(N^2) baselines need), ``baselines`` (SDPA,
FlexAttention, the official kernel), ``dma`` (DMA's own method, its time split and its checks),
``run`` (the grid driver), ``__main__`` (the command line).
"""
