/*
 * commands.h — the list of sdbatch subcommands (an X-macro: main.c expands it twice).
 * Add a command with one line here and a file src/cli/cmd_<name>.c defining
 * `int cmd_<name>(int argc, char **argv)` (argv[0] is the command name; it handles --help).
 */
SDB_COMMAND(version, "print the version and the libraries it was built with")
SDB_COMMAND(tokenize, "print the CLIP token ids of texts (--pieces: also the token strings)")
