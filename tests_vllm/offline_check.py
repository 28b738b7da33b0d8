"""Exercise the in-process vLLM backend (``vllm-offline/``); run in the vLLM environment.

``test_vllm_offline.py`` runs ``PYTHON offline_check.py MODEL_FOLDER`` with the vLLM venv's
interpreter and checks the JSON this prints on its last line. (vLLM starts worker processes, so
the work sits under the ``__main__`` guard.)
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from proofcritic.llm import ChatMessage, ChatRequest, GenerateConfig, get_model


def user(text: str) -> list[ChatMessage]:
    return [ChatMessage(role="user", content=text)]


async def run(folder: str) -> dict:
    started = time.monotonic()
    model = get_model(f"vllm-offline/{folder}", cache=False, max_model_len=2048)
    backend = model.backend
    backend.load()
    out: dict = {"load_s": round(time.monotonic() - started, 1)}
    try:
        # five callers at once: one engine call for all of them
        questions = [f"What is {k} + {k}?" for k in range(1, 6)]
        batch = await asyncio.gather(
            *(
                model.generate(
                    ChatRequest(messages=user(q), config=GenerateConfig(n=2, temperature=0.0, max_tokens=12))
                )
                for q in questions
            )
        )
        out["batch"] = {"texts": [[c.text for c in cs] for cs in batch], "stats": vars(backend.stats).copy()}
        out["prompt_tokens"] = [cs[0].prompt_tokens for cs in batch]

        sampled = GenerateConfig(n=4, temperature=1.0, max_tokens=16, seed=11)
        first = await model.generate(ChatRequest(messages=user("Write one sentence about primes."), config=sampled))
        out["sampled"] = {"first": [c.text for c in first], "tokens": [c.completion_tokens for c in first]}

        choices = ["prime", "composite", "neither"]
        guided = await model.generate(
            ChatRequest(
                messages=user("Is 91 prime? Answer in one word."),
                config=GenerateConfig(n=6, temperature=1.5, max_tokens=8, seed=5, choices=choices),
            )
        )
        out["guided"] = [c.text for c in guided]
        # the verifier's guided score: continue an assistant turn after "\boxed{"
        box = [
            *user("What is 2 + 2? Put the answer in a box."),
            ChatMessage(role="assistant", content="2 + 2 = 4, so the answer is \\boxed{"),
        ]
        [cont] = await model.generate(
            ChatRequest(
                messages=box,
                config=GenerateConfig(temperature=0.0, max_tokens=8, choices=["4}", "5}", "22}"]),
            )
        )
        out["guided_continued"] = cont.text

        out["sequence_logprobs"] = await model.sequence_logprobs(box, ["4}", "5}", "22}"])

        [greedy] = await model.generate(
            ChatRequest(
                messages=user("Count from one to five."),
                config=GenerateConfig(temperature=0.0, max_tokens=8, logprobs=True, top_logprobs=3),
            )
        )
        out["token_logprobs"] = {
            "text": greedy.text,
            "completion_tokens": greedy.completion_tokens,
            "entries": [{"token": e.token, "logprob": e.logprob, "top": e.top} for e in greedy.logprobs or []],
        }
        out["usage"] = model.usage.model_dump()

        # past the context (max_model_len 2048): the long request fails alone, unrun, with the
        # error an OpenAI-compatible server's context_length_exceeded becomes; the short one in
        # the same engine round is answered
        long = "The integer 12 is divisible by 3 and by 4. " * 300
        stats_before = vars(backend.stats).copy()
        results = await asyncio.gather(
            model.generate(ChatRequest(messages=user(long), config=GenerateConfig(temperature=0.0, max_tokens=8))),
            model.generate(
                ChatRequest(messages=user("What is 3 + 3?"), config=GenerateConfig(temperature=0.0, max_tokens=8))
            ),
            model.generate(
                ChatRequest(messages=user("What is 3 + 3?"), config=GenerateConfig(temperature=0.0, max_tokens=4000))
            ),
            model.sequence_logprobs([*user(long), ChatMessage(role="assistant", content="\\boxed{")], ["0}", "1}"]),
            return_exceptions=True,
        )
        out["context"] = {
            "kinds": [type(r).__name__ for r in results],
            "messages": [str(r) for r in results],
            "requests_run": backend.stats.requests - stats_before["requests"],
            "scoring_calls_run": backend.stats.scoring_calls - stats_before["scoring_calls"],
        }
    finally:
        await model.aclose()
    return out


if __name__ == "__main__":
    print(json.dumps(asyncio.run(run(sys.argv[1]))))
