// The per-attempt supervisor as a program of its own: `nova worker` starts it for every attempt
// of a command kind, and a small C program starts in a fraction of the time the `nova` executable
// takes (which runs the same code as `nova __supervise` where this one was not built).
#include "nova_process.h"

int main(int argc, char *argv[]) { return nova_supervise(argc - 1, argv + 1); }
