"""The exit codes of every spxbatch command, as the README lists them."""

#: 0 success; 1 the run finished but some images failed (recorded in the cube); 2 bad input (catalog, options,
#: config file); 3 a stage asked for before the stages it needs; 4 the archive cannot be reached; 130 interrupted.
EXIT_OK, EXIT_FAILURES, EXIT_INPUT, EXIT_STAGE, EXIT_ARCHIVE, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130
