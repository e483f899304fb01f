"""Grading chats: the job, endpoints, prompts, reply schema, redaction, costs, resume, runner, grader."""
