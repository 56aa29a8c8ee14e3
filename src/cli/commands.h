/*
 * commands.h — the list of sdbatch subcommands (an X-macro: main.c expands it twice).
 * Add a command with one line here and a file src/cli/cmd_<name>.c defining
 * `int cmd_<name>(int argc, char **argv)` (argv[0] is the command name; it handles --help).
 */
SDB_COMMAND(version, "print the version and the libraries it was built with")
SDB_COMMAND(generate, "generate one image: inpaint (--image --mask), img2img (--image) or txt2img")
SDB_COMMAND(info, "print the generation parameters stored in a PNG (sdbatch's or AUTOMATIC1111's; --json)")
SDB_COMMAND(tokenize, "print the CLIP token ids of texts (--pieces: also the token strings)")
SDB_COMMAND(validate, "check a batch manifest (schema, inputs, model configs) without computing")
SDB_COMMAND(run, "run a batch manifest's pending jobs, resumably")
SDB_COMMAND(status, "show a batch's progress from its state database(s)")
SDB_COMMAND(repair, "rebuild a batch's state database from the outputs on disk (after damage)")
SDB_COMMAND(daemon, "run the manifests of a spool folder as a service (SIGTERM stops, resumably)")
SDB_COMMAND(submit, "hand a manifest to the daemon: copy it into a spool atomically")
SDB_COMMAND(sheet, "draw a contact sheet of a batch (input + mask outline, output, caption; PNG pages or --html)")
SDB_COMMAND(bench, "time text encoding, a U-Net step, VAE encode/decode and a run against sgemm")
