"""Evaluation suites (IMO, CMO, Putnam, IMO-ProofBench, grader-vs-human). Not built yet."""
