"""The command line: the only package that parses arguments and prints tables. `main` is the
`embedworker` entry point; `lake_commands` its day-2 verbs (lake, restore, dlq); `tables` the
rich tables; `demo` the local end-to-end run. May import every other package."""
