/* bench/tcpxfer.c — one large TCP transfer for bench/run.sh's L4 throughput figure.
 *
 *   tcpxfer serve PORT BYTES   listen on 127.0.0.1:PORT; every connection (one process each) gets
 *                              BYTES zero bytes, sent with sendfile(2) from a 16 MiB memfd (no
 *                              copy through user space), then the server closes it
 *   tcpxfer get HOST PORT      connect, read until the server's close (recv with MSG_TRUNC:
 *                              the kernel discards the data, no copy either), print one line
 *                              "bytes N secs S gbps G" (G = 10^9 bytes per second, from the
 *                              connect to the end of the stream)
 *
 * Both ends cost as little CPU as the kernel allows, so that a proxy between them is the limit.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { FILE_SZ = 16 << 20, RBUF = 1 << 20 };

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int usage(void)
{
	fprintf(stderr, "usage: tcpxfer serve PORT BYTES | tcpxfer get HOST PORT\n");
	return 2;
}

static void send_all(int c, int mfd, unsigned long long total)
{
	while (total > 0) {
		off_t off = 0;
		size_t n = total < FILE_SZ ? (size_t)total : FILE_SZ;
		while (n > 0) {
			ssize_t w = sendfile(c, mfd, &off, n);
			if (w < 0 && errno == EINTR)
				continue;
			if (w <= 0)
				return;
			n -= (size_t)w;
			total -= (unsigned long long)w;
		}
	}
}

static int serve(int port, unsigned long long bytes)
{
	int mfd = memfd_create("tcpxfer", 0);
	static char zero[1 << 16];
	if (mfd < 0) {
		perror("memfd_create");
		return 1;
	}
	for (int i = 0; i < FILE_SZ / (int)sizeof zero; i++)
		if (write(mfd, zero, sizeof zero) != (ssize_t)sizeof zero) {
			perror("write");
			return 1;
		}
	int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) != 0 || listen(s, 128) != 0) {
		perror("tcpxfer: listen");
		return 1;
	}
	signal(SIGCHLD, SIG_IGN);
	signal(SIGPIPE, SIG_IGN);
	for (;;) {
		int c = accept(s, NULL, NULL);
		if (c < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			perror("accept");
			return 1;
		}
		pid_t pid = fork();
		if (pid == 0) {
			close(s);
			send_all(c, mfd, bytes);
			close(c);
			_exit(0);
		}
		close(c);
	}
}

static int get(const char *host, int port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	if (inet_pton(AF_INET, host, &a.sin_addr) != 1)
		return usage();
	static char buf[RBUF];
	double t0 = now_s();
	int s = socket(AF_INET, SOCK_STREAM, 0);
	if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof a) != 0) {
		perror("tcpxfer: connect");
		return 1;
	}
	unsigned long long total = 0;
	for (;;) {
		ssize_t r = recv(s, buf, sizeof buf, MSG_TRUNC);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			perror("tcpxfer: recv");
			break;
		}
		if (r == 0)
			break;
		total += (unsigned long long)r;
	}
	double dt = now_s() - t0;
	printf("bytes %llu secs %.3f gbps %.3f\n", total, dt, dt > 0 ? (double)total / dt / 1e9 : 0.0);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 4 && !strcmp(argv[1], "serve"))
		return serve(atoi(argv[2]), strtoull(argv[3], NULL, 10));
	if (argc == 4 && !strcmp(argv[1], "get"))
		return get(argv[2], atoi(argv[3]));
	return usage();
}
