"""Recipes that run the whole pipeline (tokenizer → data → train → eval → report) end to end, as a library call
the CLI wraps. They sit above every stage and below the CLI."""
