"""Files people and machines read: scores.csv, grades.jsonl, checks.jsonl, exports and summaries."""
