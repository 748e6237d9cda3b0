/* sysinfo-bench's reader: N calls of sysinfo(2), or N open+read+close of a file, each timed;
 * prints "calls/s p50_us p99_us". Usage: sysinfo-reader N sysinfo|FILE */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysinfo.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}
static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}
int main(int argc, char **argv) {
    if (argc < 3) return 2;
    long n = atol(argv[1]);
    int sys = strcmp(argv[2], "sysinfo") == 0;
    double *lat = malloc(n * sizeof *lat);
    static char buf[65536];
    struct sysinfo s;
    if (!lat || n <= 0) return 2;
    double t0 = now();
    for (long i = 0; i < n; i++) {
        double a = now();
        if (sys) {
            if (sysinfo(&s)) { perror("sysinfo"); return 1; }
        } else {
            int fd = open(argv[2], O_RDONLY);
            if (fd < 0 || read(fd, buf, sizeof buf) <= 0) { perror(argv[2]); return 1; }
            close(fd);
        }
        lat[i] = now() - a;
    }
    double total = now() - t0;
    qsort(lat, n, sizeof *lat, cmp);
    printf("%.0f %.1f %.1f\n", n / total, lat[n / 2] * 1e6, lat[n * 99 / 100] * 1e6);
    return 0;
}
