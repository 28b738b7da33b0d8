"""RLPAF (DeepSeek-Prover V1.5): generator GRPO whose reward is the Lean checker's verdict.

``train prover`` (:func:`train_prover`) trains the generator as a Lean prover: each row shows
the ``formal_prove`` prompt for one Lean statement, the model writes a proof, and the reward
(:func:`make_lean_reward`) is 1 when Lean accepts it, else 0 (``lean_prompt: code``: the row shows
DeepSeek-Prover's completion prompt, an open Lean block with the statement, and the completion
continues that code up to its closing fence). A completion is judged exactly as
``lean-prove`` judges an attempt: its last fenced ``lean`` block is extracted
(:func:`~proofcritic.pipelines.formal.extract_lean`; none: 0), it must keep the statement
(:func:`~proofcritic.pipelines.formal.statement_preserved`; changed: 0, no check), and the
checker must pass it (no error, no ``sorry`` / ``admit``, no declared axiom, allowed axioms
only). The checker is the config's (``lean_checker``: a pool of warm ``lean --server``
processes by default, a cold ``lean`` per check, or a Kimina server), kept for the whole run.

**Cache.** Each distinct file is checked once: completions that extract to the same file (in
a batch, or in any later step) share one check, and every verdict is appended to a JSONL file
(``lean_cache_file``, default ``OUTPUT_DIR/lean_checks.jsonl``), so a resumed run (or a second
run on the same data) checks nothing twice. The key is a hash of the file and the checker's
settings (kind, project, timeout, allowed axioms); a check that could not run (status
``error``) is not cached.

**Metrics** (per logging step, beside TRL's ``completions/mean_length`` and clipped ratio):
``lean_reward/passed`` (the pass rate), ``lean_block`` (share with a Lean block),
``statement_kept``, ``checked`` (share checked by Lean in this step), ``cached`` (share answered
by the cache), ``proof_chars`` (mean length of the extracted proof, in characters; samples
without a block count 0), ``timeout``.

A checker that cannot give verdicts at all (a lean without ``Init`` on a file without
``prelude``; no Mathlib) raises its :class:`~proofcritic.errors.SetupError` out of the reward:
training stops with that one line instead of training on zeros.

Rows (``train_file``): any formal file :mod:`proofcritic.benchmarks.formal_suites` reads
(JSONL with ``lean_statement`` and ``problem`` / ``statement``, miniF2F rows with ``name``,
``header``, ``formal_statement``, a CSV with ``Lean Statement``, a ``.lean`` file of theorems),
or rows that already have ``prompt`` and ``lean_statement``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import SetupError
from ..io import JsonlAppender, iter_jsonl
from .rewards import _RUNNER, RewardFunction, _ModelReward

if TYPE_CHECKING:
    from ..lean_checker import LeanChecker, LeanResult
    from ._configs import ProofcriticGRPOConfig

__all__ = ["LEAN_CHECKERS", "lean_checker_for", "make_lean_reward", "prover_dataset", "train_prover"]

#: the checkers ``lean_checker`` names
LEAN_CHECKERS = ("server", "local", "kimina")


def checker_fingerprint(checker: LeanChecker) -> str:
    """What a verdict depends on besides the file: the checker's kind, project, timeout, axioms."""
    parts = [
        type(checker).__name__,
        str(getattr(checker, "project", None) or getattr(checker, "url", None) or ""),
        f"{checker.timeout:g}",
        sorted(checker.allowed_axioms),
    ]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


class _LeanReward(_ModelReward):
    columns = ("lean_statement",)

    def __init__(self, checker: LeanChecker, cache_file: str | Path | None = None):
        super().__init__("lean_reward")
        self.checker = checker
        self.fingerprint = checker_fingerprint(checker)
        self.cache_file = Path(cache_file) if cache_file is not None else None
        self._verdicts: dict[str, LeanResult] = {}
        self._pending: dict[str, asyncio.Future[LeanResult]] = {}
        self._appender: JsonlAppender | None = None
        self.checks = 0  #: Lean checks made by this reward (cache hits are not checks)
        self.cache_hits = 0
        if self.cache_file is not None and self.cache_file.is_file():
            from ..lean_checker import LeanResult

            for _, entry in iter_jsonl(self.cache_file):  # a line cut by a kill is skipped
                if isinstance(entry, dict) and isinstance(entry.get("key"), str) and "result" in entry:
                    self._verdicts[entry["key"]] = LeanResult.model_validate(entry["result"])

    def _key(self, source: str) -> str:
        return hashlib.sha256(f"{self.fingerprint}\n{source}".encode()).hexdigest()

    async def verdict(self, source: str) -> tuple[LeanResult, bool]:
        """Lean's result for ``source`` and whether it came from the cache (the same file is
        checked once: a check in flight is shared with every sample that asks for it)."""
        key = self._key(source)
        if key in self._verdicts:
            self.cache_hits += 1
            return self._verdicts[key], True
        if key in self._pending:
            self.cache_hits += 1
            return await asyncio.shield(self._pending[key]), True
        future: asyncio.Future[LeanResult] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            self.checks += 1
            result = await self.checker.check(source)
        except BaseException as error:
            if isinstance(error, Exception):
                future.set_exception(error)
                future.exception()  # retrieved: the samples sharing it re-raise it themselves
            else:
                future.cancel()
            raise
        finally:
            self._pending.pop(key, None)
        future.set_result(result)
        if result.status != "error":  # a check that could not run is asked again next time
            self._verdicts[key] = result
            if self.cache_file is not None:
                if self._appender is None:
                    self._appender = JsonlAppender(self.cache_file)
                self._appender.write({"key": key, "result": result.model_dump(mode="json")})
        return result, False

    async def _aone(self, text: str, row: dict[str, Any]) -> dict[str, Any]:
        from ..pipelines.formal import extract_lean, statement_preserved

        statement = row["lean_statement"]
        if not isinstance(statement, str) or not statement.strip():
            return {"reward": None, "error": "the row has no Lean statement"}
        prefix = row.get("lean_prefix")
        # lean_prompt code: the completion continues the open Lean block of the prompt, up to its fence
        lean = prefix + text.split("```", 1)[0].rstrip() + "\n" if prefix else extract_lean(text)
        out: dict[str, Any] = {"lean_block": 0.0, "proof_chars": 0.0, "checked": 0.0, "cached": 0.0}
        if lean is None:
            return {"reward": 0.0, "passed": 0.0, "status": "no_lean_block", **out}
        out.update(lean_block=1.0, proof_chars=float(len(lean)))
        kept, why = statement_preserved(statement, lean)
        if not kept:
            return {
                "reward": 0.0,
                "passed": 0.0,
                "statement_kept": 0.0,
                "status": "statement_changed",
                "why": why,
                **out,
            }
        result, cached = await self.verdict(lean)
        passed = 1.0 if result.ok else 0.0
        out.update(checked=0.0 if cached else 1.0, cached=1.0 if cached else 0.0)
        return {
            "reward": passed,
            "passed": passed,
            "statement_kept": 1.0,
            "timeout": 1.0 if result.status == "timeout" else 0.0,
            "status": result.status,
            "reasons": list(result.reasons),
            **out,
        }

    async def acall(self, completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
        texts, rows = self._rows(completions, kwargs)
        prefixes = kwargs.get("lean_prefix")  # the rows of lean_prompt code (optional column)
        if prefixes is not None:
            for row, prefix in zip(rows, prefixes):
                row["lean_prefix"] = prefix
        outcomes = await asyncio.gather(*(self._aone(t, r) for t, r in zip(texts, rows)), return_exceptions=True)
        setup = next((o for o in outcomes if isinstance(o, SetupError)), None)
        if setup is not None:  # no verdict is possible at all: stop, do not train on zeros
            raise setup
        components: list[dict[str, Any]] = []
        for outcome in outcomes:
            if isinstance(outcome, BaseException) and not isinstance(outcome, Exception):
                raise outcome
            if isinstance(outcome, Exception):
                from ..errors import ProofcriticError

                if not isinstance(outcome, ProofcriticError):
                    raise outcome
                components.append({"reward": None, "error": f"{type(outcome).__name__}: {outcome}"})
            else:
                components.append(outcome)
        return self._finish(components)

    async def aclose(self) -> None:
        """Stop the checker's processes and close the cache file."""
        if self._appender is not None:
            self._appender.close()
            self._appender = None
        await self.checker.close()

    def close(self) -> None:
        """:meth:`aclose` on the loop the checks ran on."""
        _RUNNER.run(self.aclose())


def make_lean_reward(checker: LeanChecker, *, cache_file: str | Path | None = None) -> RewardFunction:
    """RLPAF's reward: 1 when the completion's Lean proof keeps the row's ``lean_statement`` and
    ``checker`` passes it, else 0 (see the module docstring). Column: ``lean_statement``.
    ``cache_file``: a JSONL file of verdicts, read at start and appended to. Close it with
    ``reward.close()`` (or ``await reward.aclose()``) to stop the checker."""
    return _LeanReward(checker, cache_file)


def lean_checker_for(config: ProofcriticGRPOConfig) -> LeanChecker:
    """The checker a prover config names (``lean_checker``, ``lean_binary``, ``lean_project``,
    ``lean_url``, ``lean_timeout``, ``lean_concurrency``, ``lean_allow_axioms``)."""
    import os

    from ..lean_checker import get_checker

    kind = config.lean_checker
    size = config.lean_concurrency
    if kind == "kimina":
        checker = get_checker(
            "kimina",
            url=config.lean_url,
            api_key=os.environ.get("KIMINA_API_KEY"),
            timeout=config.lean_timeout,
            concurrency=size,
        )
    elif kind == "server":
        checker = get_checker(
            "server", lean=config.lean_binary, project=config.lean_project, timeout=config.lean_timeout, pool_size=size
        )
    else:
        checker = get_checker(
            "local", lean=config.lean_binary, project=config.lean_project, timeout=config.lean_timeout, concurrency=size
        )
    if config.lean_allow_axioms:
        checker.allowed_axioms = checker.allowed_axioms | frozenset(config.lean_allow_axioms)
    return checker


CODE_PROMPT = "Complete the following Lean 4 code:\n\n```lean4\n"
_TRAILING_SORRY = re.compile(r"\s*(?<![\w.\x27])sorry\s*\Z")


def code_prefix(lean_statement: str) -> str:
    """The statement without its final ``sorry``: the open code a ``lean_prompt: code`` row shows."""
    return _TRAILING_SORRY.sub("", lean_statement.rstrip()) + "\n"


def prover_dataset(path: str | Path, lean_prompt: str = "chat"):
    """The GRPO rows of ``train prover``: ``prompt``, ``problem`` and ``lean_statement``, from
    any formal file (or rows that have a prompt). ``lean_prompt`` chat: the ``formal_prove``
    template (a conversation; the model answers with a fenced Lean block); code: DeepSeek-Prover's
    completion prompt, ``Complete the following Lean 4 code:`` and an open ``lean4`` block holding
    the statement up to its proof (plain text; the completion continues the code, and the row's
    ``lean_prefix`` is that code)."""
    from datasets import Dataset

    from ..benchmarks.formal_suites import formal_item, formal_records
    from ..errors import InputError
    from ..pipelines.formal import FORMAL_VARIABLES, TEMPLATE
    from ..promptset import PromptSet
    from ._configs import ConfigError

    file = Path(path)
    records = formal_records(file)
    if records and all("prompt" in r and "lean_statement" in r for r in records):
        return Dataset.from_list([{k: v for k, v in r.items() if k != "_line"} for r in records])
    prompts = PromptSet.load().template_set(TEMPLATE, FORMAL_VARIABLES[TEMPLATE])
    rows = []
    for record in records:
        try:
            item = formal_item(record)
        except InputError as error:
            raise ConfigError(f"{file} record {record.get('_line', '?')}: {error}") from None
        row: dict[str, Any] = {"problem": item.problem.model_dump(mode="json"), "lean_statement": item.lean_statement}
        if lean_prompt == "code":
            row["lean_prefix"] = code_prefix(item.lean_statement)
            row["prompt"] = CODE_PROMPT + row["lean_prefix"]
        else:
            messages = prompts.render(TEMPLATE, problem=item.problem, lean_statement=item.lean_statement, feedback="")
            row["prompt"] = [{"role": m.role, "content": m.content} for m in messages]
        rows.append(row)
    if not rows:
        raise ConfigError(f"{file} holds no Lean statement to train on")
    return Dataset.from_list(rows)


def train_prover(
    config: ProofcriticGRPOConfig, *, checker: LeanChecker | None = None, callbacks: list | None = None
) -> str:
    """GRPO of the generator against Lean's verdict (``reward: lean``); returns the output folder.
    ``checker``: a checker to use instead of the one the config names (it is closed at the end)."""
    from .recipes import (
        RewardComponentsLogger,
        _finish,
        _grpo_trainer_class,
        _need_train_file,
        _peft_config,
        _tokenizer,
        _trl_checkpointing_names,
        metrics_path,
        resolve_model_path,
    )

    train = prover_dataset(_need_train_file(config), config.lean_prompt)
    evaluation = prover_dataset(config.eval_file, config.lean_prompt) if config.eval_file else None
    cache = config.lean_cache_file or str(Path(config.output_dir or ".") / "lean_checks.jsonl")
    reward = make_lean_reward(checker if checker is not None else lean_checker_for(config), cache_file=cache)
    model_path = resolve_model_path(config.model)
    components = RewardComponentsLogger([reward], metrics_path(config))
    try:
        with _trl_checkpointing_names():
            trainer = _grpo_trainer_class()(
                model=model_path,
                reward_funcs=[reward],
                args=config,
                train_dataset=train,
                eval_dataset=evaluation,
                processing_class=_tokenizer(model_path),
                peft_config=_peft_config(config),
                callbacks=[components, *(callbacks or [])],
            )
        trainer.component_loggers = (components,)
        return _finish(trainer, config)
    finally:
        reward.close()  # type: ignore[attr-defined]
