"""Scoring with a local model (the likelihood read-out and guided choice of the transformers
backend): the total log-likelihood of several token lists that share a long prefix (one prompt,
several continuations).

:func:`score_shared` runs the common prefix once with a KV cache and only each list's own tokens
on top of it, all in one batch, and keeps the prefixes it ran for later calls (a read-out of the
same prompt after another analysis runs only the new part); :func:`score_full` runs every list
in full, the fallback for a model whose cache cannot be reused that way. Both give the same
totals (to float rounding). Every forward pass keeps its logits under ``_SCORE_BUDGET``
elements (:func:`budget_chunks`).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ._local_batching import pad_rows
from ._local_loading import import_torch, import_transformers

#: logits elements (rows x tokens x vocab) allowed in one scoring forward pass (~512 MB fp32)
_SCORE_BUDGET = 1 << 27


@dataclass
class Prefix:
    """A prefix scored before: its tokens, its keys and values per layer (batch of one), and
    ``logprobs[i]``, the log-probability of token i after the ones before it (0 for token 0)."""

    tokens: list[int]
    kv: list[tuple[Any, Any]]
    logprobs: list[float]


def token_logprobs(logits: Any, targets: Any) -> Any:
    """``log_softmax(logits[i])[targets[i]]`` for every row i, as a float32 tensor (computed in
    float32 whatever the logits' type; no rows give an empty tensor)."""
    torch = import_torch()
    row = logits.float()
    picked = row.gather(1, targets[:, None].to(row.device)).squeeze(1)
    return picked - torch.logsumexp(row, dim=-1)


def budget_chunks(order: list[int], length: Callable[[int], int], vocab: int) -> Iterator[list[int]]:
    """``order`` (indices sorted by ``length``, shortest first) cut into consecutive runs whose
    logits (rows x the run's longest row x ``vocab``) fit ``_SCORE_BUDGET``; a run holds one row
    at least, however long."""
    start = 0
    while start < len(order):
        stop = start + 1
        while stop < len(order) and (stop + 1 - start) * length(order[stop]) * vocab <= _SCORE_BUDGET:
            stop += 1
        yield order[start:stop]
        start = stop


def cache_keyword(model: Any) -> str:
    """The keyword a model's ``forward`` takes its KV cache by: ``cache`` in transformers 5.x
    (which deprecates ``past_key_values`` with a FutureWarning on every call), else
    ``past_key_values``."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def score_full(model: Any, seqs: list[list[int]], *, pad_id: int, device: str, stats: Any) -> list[float]:
    """Total log-likelihood of each token list, every list run in full (padded batches)."""
    torch = import_torch()
    vocab = int(model.config.get_text_config().vocab_size)
    totals: list[float] = [0.0] * len(seqs)
    order = sorted(range(len(seqs)), key=lambda j: len(seqs[j]))
    for chunk in budget_chunks(order, lambda j: len(seqs[j]), vocab):
        ids, mask = pad_rows([seqs[j] for j in chunk], pad_id, left=False)  # positions 0..n-1
        stats.scoring_passes += 1
        with torch.inference_mode():
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
            for r, j in enumerate(chunk):
                n = len(seqs[j])
                totals[j] = float(token_logprobs(logits[r, : n - 1], ids[r, 1:n]).sum())
    return totals


def score_shared(
    model: Any,
    seqs: list[list[int]],
    *,
    pad_id: int,
    device: str,
    stats: Any,
    prefixes: list[Prefix],
    keep_tokens: int,
) -> list[float] | None:
    """Total log-likelihood of each token list, running their common prefix only once.

    The prefix is every token the lists share (cut so that each list keeps at least one
    token of its own); it runs once with a KV cache (in pieces if its logits would exceed
    the budget), which gives its own log-likelihood and the distribution of the first token
    after it. The lists' remaining tokens then run as one right-padded batch on the cached
    prefix, repeated for each row. Returns None, before any work, when the model's cache is
    not a plain full-attention :class:`DynamicCache` (sliding windows, linear attention),
    or when the lists share nothing.

    Across calls, the prefixes run last are kept in ``prefixes`` (least recently used first,
    ``keep_tokens`` tokens in all; 0: none): a new prefix that starts like one of them (the
    same prompt with another analysis) runs only from where they part.
    """
    torch, tf = import_torch(), import_transformers()
    from transformers.cache_utils import DynamicLayer

    shared = min(len(s) for s in seqs) - 1
    for seq in seqs[1:]:
        shared = next((i for i in range(shared) if seq[i] != seqs[0][i]), shared)
    if shared < 1:
        return None
    dev, vocab = torch.device(device), int(model.config.get_text_config().vocab_size)
    cache_arg = cache_keyword(model)
    if not all(type(layer) is DynamicLayer for layer in tf.DynamicCache(config=model.config).layers):
        return None
    prefix = seqs[0][:shared]
    entry, reuse = _cached_prefix(prefixes, prefix, keep_tokens)
    if entry is None:
        cache, token_lp = tf.DynamicCache(config=model.config), [0.0]
    else:  # its first ``reuse`` tokens' keys and values (copied), and its logprobs up to token ``reuse``
        cache = tf.DynamicCache([(k[:, :, :reuse], v[:, :, :reuse]) for k, v in entry.kv])
        token_lp = entry.logprobs[: reuse + 1]
        stats.prefix_tokens_reused += reuse
    step = max(1, _SCORE_BUDGET // vocab)  # prefix tokens per pass
    with torch.inference_mode():
        nxt = None  # logits that predict the token after the part already run
        for a in range(reuse, shared, step):
            piece = torch.tensor([prefix[a : a + step]], dtype=torch.long)
            stats.scoring_passes += 1
            logits = model(
                input_ids=piece.to(dev),
                position_ids=torch.arange(a, a + piece.shape[1], device=dev)[None],
                **{cache_arg: cache},
                use_cache=True,
            ).logits[0]
            if nxt is not None:
                token_lp += token_logprobs(nxt[None], piece[0, :1]).tolist()
            token_lp += token_logprobs(logits[:-1], piece[0, 1:]).tolist()
            nxt = logits[-1].float()
        if cache.get_seq_length() != shared or any(layer.keys is None for layer in cache.layers):
            return None  # not the cache this function expects; nothing was returned yet
        kv = [(layer.keys, layer.values) for layer in cache.layers]
        _keep_prefix(prefixes, Prefix(prefix, kv, token_lp), keep_tokens)
        prefix_total = math.fsum(token_lp)
        first = torch.log_softmax(nxt, dim=-1)
        totals = [prefix_total + float(first[s[shared]]) for s in seqs]
        # the tokens after the first one of each list's own part
        rest = [j for j, s in enumerate(seqs) if len(s) > shared + 1]
        rest.sort(key=lambda j: len(seqs[j]))
        for chunk in budget_chunks(rest, lambda j: len(seqs[j]) - shared, vocab):
            # run every token of a row's own part but its last; logits[k] predicts token k + 1
            fed = [seqs[j][shared:-1] for j in chunk]
            ids, mask = pad_rows(fed, pad_id, left=False)
            rows, width = ids.shape
            full_mask = torch.cat([torch.ones((rows, shared), dtype=mask.dtype), mask], dim=1)
            rows_cache = tf.DynamicCache([(k.expand(rows, -1, -1, -1), v.expand(rows, -1, -1, -1)) for k, v in kv])
            stats.scoring_passes += 1
            logits = model(
                input_ids=ids.to(dev),
                attention_mask=full_mask.to(dev),
                position_ids=torch.arange(shared, shared + width, device=dev)[None].expand(rows, -1),
                **{cache_arg: rows_cache},
                use_cache=True,
            ).logits
            for r, j in enumerate(chunk):
                n = len(fed[r])
                totals[j] += math.fsum(token_logprobs(logits[r, :n], torch.tensor(seqs[j][shared + 1 :])).tolist())
    stats.shared_prefixes += 1
    return totals


def _cached_prefix(prefixes: list[Prefix], prefix: list[int], keep_tokens: int) -> tuple[Prefix | None, int]:
    """The kept prefix that starts like ``prefix`` for longest, and how many of its tokens to
    reuse: all those in common but the last one (it runs again, to give the logits that
    predict the next token), so at most ``len(prefix) - 1``; (None, 0) when none helps."""
    if keep_tokens <= 0:
        return None, 0
    best, best_len = None, 0
    for entry in prefixes:
        limit = min(len(entry.tokens), len(prefix))
        same = next((i for i in range(limit) if entry.tokens[i] != prefix[i]), limit)
        if same > best_len:
            best, best_len = entry, same
    if best is None or best_len < 2:
        return None, 0
    prefixes.remove(best)
    prefixes.append(best)  # most recently used last
    return best, min(best_len, len(prefix)) - 1


def _keep_prefix(prefixes: list[Prefix], entry: Prefix, keep_tokens: int) -> None:
    """Keep ``entry`` in ``prefixes`` for later calls, dropping the least recently used beyond
    ``keep_tokens`` tokens."""
    if len(entry.tokens) <= keep_tokens:
        # a kept prefix that the new one extends is of no further use
        prefixes[:] = [
            e
            for e in prefixes
            if not (len(e.tokens) <= len(entry.tokens) and entry.tokens[: len(e.tokens)] == e.tokens)
        ]
        prefixes.append(entry)
    while prefixes and sum(len(e.tokens) for e in prefixes) > keep_tokens:
        prefixes.pop(0)
