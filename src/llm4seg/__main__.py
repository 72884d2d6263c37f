"""``python -m llm4seg`` runs the command-line interface."""
from llm4seg.cli import main

raise SystemExit(main())
