"""The hooks of one batched ``model.generate`` call of the transformers backend: a stopping
criterion that applies each row's own limits, and a logits processor that records the
log-probabilities of the chosen tokens (and the top-k)."""

from __future__ import annotations

from typing import Any

from ._local_batching import Row
from ._local_loading import import_torch


class RowStopper:
    """Stopping criterion with per-row limits: each row's own max_tokens, stop strings and EOS.

    ``done_at[i]`` is the number of generated tokens of row ``i`` when it finished.
    """

    def __init__(self, rows: list[Row], width: int, tokenizer: Any, eos_ids: set[int]):
        self.rows, self.width, self.tokenizer, self.eos_ids = rows, width, tokenizer, eos_ids
        self.done_at: list[int | None] = [None] * len(rows)
        # enough tokens to contain any stop string ending in the newest token
        self.window = [2 * max((len(s) for s in r.stop), default=0) + 8 for r in rows]

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        torch = import_torch()
        generated = input_ids.shape[1] - self.width
        last = input_ids[:, -1].tolist()
        for i, row in enumerate(self.rows):
            if self.done_at[i] is not None:
                continue
            if last[i] in self.eos_ids or generated >= row.max_tokens:
                self.done_at[i] = generated
            elif row.stop:
                tail = input_ids[i, max(self.width, input_ids.shape[1] - self.window[i]) :].tolist()
                text = self.tokenizer.decode(tail, skip_special_tokens=True)
                if any(s in text for s in row.stop):
                    self.done_at[i] = generated
        done = [d is not None for d in self.done_at]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class LogprobRecorder:
    """Logits processor that records the log-probability of each chosen token (and the top-k).

    It sees the model's logits before temperature / top-p, so the values are the model's own
    distribution. The token chosen at step t is only known at step t+1 (or from the output).
    """

    def __init__(self, width: int, k: int):
        self.width, self.k = width, k
        self.prev: Any = None
        self.chosen: list[Any] = []
        self.top_vals: list[Any] = []
        self.top_idx: list[Any] = []

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        torch = import_torch()
        if input_ids.shape[1] > self.width:
            self._take(input_ids[:, -1])
        self.prev = torch.log_softmax(scores.float(), dim=-1)
        if self.k > 0:
            vals, idx = self.prev.topk(self.k, dim=-1)
            self.top_vals.append(vals.cpu())
            self.top_idx.append(idx.cpu())
        return scores

    def _take(self, tokens: Any) -> None:
        self.chosen.append(self.prev.gather(1, tokens[:, None].to(self.prev.device)).squeeze(1).cpu())

    def finish(self, sequences: Any) -> tuple[list[list[float]], tuple[list, list] | None]:
        """Chosen logprobs as ``[step][row]``, and top-k as ``([step][row][k], [step][row][k])``."""
        torch = import_torch()
        if self.prev is not None and len(self.chosen) < sequences.shape[1] - self.width:
            self._take(sequences[:, self.width + len(self.chosen)])
        chosen = torch.stack(self.chosen).tolist() if self.chosen else []
        tops = (torch.stack(self.top_vals).tolist(), torch.stack(self.top_idx).tolist()) if self.k > 0 else None
        return chosen, tops
