/* open + read-to-EOF + close of one file, N times per thread, T threads.
 * Prints: p50_us p99_us reads_per_sec (latencies over all threads, throughput wall clock). */
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static const char *path;
static int iters;
static double *lat;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void *run(void *arg) {
    long t = (long)arg;
    char buf[65536];
    for (int i = 0; i < iters; i++) {
        double a = now();
        int fd = open(path, O_RDONLY);
        if (fd < 0) { perror(path); exit(1); }
        while (read(fd, buf, sizeof buf) > 0) {}
        close(fd);
        lat[t * iters + i] = (now() - a) * 1e6;
    }
    return NULL;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    if (argc != 4) { fprintf(stderr, "usage: %s FILE ITERS THREADS\n", argv[0]); return 2; }
    path = argv[1];
    iters = atoi(argv[2]);
    int threads = atoi(argv[3]);
    lat = calloc((size_t)iters * threads, sizeof *lat);
    pthread_t th[64];
    double t0 = now();
    for (long t = 0; t < threads; t++) pthread_create(&th[t], NULL, run, (void *)t);
    for (int t = 0; t < threads; t++) pthread_join(th[t], NULL);
    double wall = now() - t0;
    size_t n = (size_t)iters * threads;
    qsort(lat, n, sizeof *lat, cmp);
    printf("%.1f %.1f %.0f\n", lat[n / 2], lat[n * 99 / 100], n / wall);
    return 0;
}
