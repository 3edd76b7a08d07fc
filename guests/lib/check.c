/* Self-checking guests: one verdict line per check, and a tally for the summary. */
#include "kernel.h"

int verdicts, verdicts_failed;

void verdict(const char *what, int ok)
{
    verdicts++;
    if (!ok)
        verdicts_failed++;
    printf("%-52s %s\n", what, ok ? "ok" : "FAIL");
}
