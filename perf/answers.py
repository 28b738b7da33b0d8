"""What grading an answer suite costs on the CPU: ``check_answer`` (extraction + math-verify) of
AnswerBench's reference answers restated in a box, and ``majority_answer`` (maj@k's vote) over
k = 8 answers per problem (4 equivalent, 3 others, one without an answer). Both run on the event
loop of ``eval solve`` (math-verify's timeouts need the main thread), so this is the time a
sample's grading holds up the other problems in flight.

Usage: python perf/answers.py [N_PROBLEMS]
"""

import sys
import time

from proofcritic.answers import check_answer
from proofcritic.benchmarks import load_suite
from proofcritic.benchmarks.answer_suites import majority_answer


def main(n: int) -> None:
    items = load_suite("answerbench", limit=n)
    started = time.perf_counter()
    right = sum(check_answer(i.answer, f"So \\boxed{{{i.answer.strip('$. ')}}}").correct for i in items)
    spent = time.perf_counter() - started
    print(f"check_answer: {len(items)} answers, {spent / len(items) * 1000:.1f} ms each; {right} judged equivalent")
    votes = items[: max(1, n // 4)]
    started = time.perf_counter()
    for item in votes:
        answer = item.answer.strip("$. ")
        majority_answer([answer, "0", answer, "1", None, answer, "2", answer])
    spent = time.perf_counter() - started
    print(f"majority_answer (k=8): {len(votes)} problems, {spent / len(votes) * 1000:.0f} ms each")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100)
