#include "cli/cli.h"

int main(int argc, char** argv) { return potluck::RunCli(argc, argv); }
