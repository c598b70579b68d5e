/*
 * vsock-helper: the guest side of Ember's vsock tests (busybox has no AF_VSOCK).
 *
 *   vsock-helper echo PORT            serve forever: each connection gets back what it
 *                                     sends, then EOF once it shuts its sending side
 *   vsock-helper source PORT          serve forever: each connection gets zeros until
 *                                     it goes away (a host that stops reading)
 *   vsock-helper close-after N PORT   serve forever: read N bytes, then close
 *   vsock-helper connect CID PORT     stdin to the socket (then shut it for writing),
 *                                     the socket to stdout, until both are done
 *   vsock-helper accept PORT          accept one connection, then as connect
 *
 * Exit status: 0, 1 for usage, 2 when the connection is refused or fails (the error is
 * printed on stderr).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/vm_sockets.h>

static int fail(const char *what)
{
	fprintf(stderr, "vsock-helper: %s: %s\n", what, strerror(errno));
	return 2;
}

static int write_all(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, buf, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Copies in both directions at once, so a peer that echoes never deadlocks us. */
static int relay(int sock)
{
	static char buf[65536];
	int in_open = 1, sock_open = 1;
	while (sock_open) {
		struct pollfd fds[2] = {{sock, POLLIN, 0}, {0, POLLIN, 0}};
		if (poll(fds, in_open ? 2 : 1, -1) < 0) {
			if (errno == EINTR)
				continue;
			return fail("poll");
		}
		if (fds[0].revents) {
			ssize_t n = read(sock, buf, sizeof(buf));
			if (n < 0)
				return fail("read socket");
			if (n == 0)
				sock_open = 0;
			else if (write_all(1, buf, (size_t)n) < 0)
				return fail("write stdout");
		}
		if (in_open && fds[1].revents) {
			ssize_t n = read(0, buf, sizeof(buf));
			if (n <= 0) {
				in_open = 0;
				shutdown(sock, SHUT_WR);
			} else if (write_all(sock, buf, (size_t)n) < 0) {
				return fail("write socket");
			}
		}
	}
	return 0;
}

static int listen_on(unsigned port)
{
	struct sockaddr_vm addr = {.svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_ANY,
				   .svm_port = port};
	int fd = socket(AF_VSOCK, SOCK_STREAM, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 || listen(fd, 64) < 0)
		exit(fail("listen"));
	return fd;
}

static void serve_echo(int conn)
{
	static char buf[65536];
	ssize_t n;
	while ((n = read(conn, buf, sizeof(buf))) > 0)
		if (write_all(conn, buf, (size_t)n) < 0)
			break;
}

static void serve_source(int conn)
{
	static char zeros[65536];
	while (write_all(conn, zeros, sizeof(zeros)) == 0)
		;
}

static void serve_close_after(int conn, long count)
{
	static char buf[4096];
	while (count > 0) {
		ssize_t n = read(conn, buf, count < (long)sizeof(buf) ? (size_t)count : sizeof(buf));
		if (n <= 0)
			break;
		count -= n;
	}
}

/* Forks a child per connection; never returns. */
static void serve(unsigned port, void (*handler)(int, long), long arg)
{
	int fd = listen_on(port);
	signal(SIGCHLD, SIG_IGN);
	signal(SIGPIPE, SIG_IGN);
	for (;;) {
		int conn = accept(fd, NULL, NULL);
		if (conn < 0)
			continue;
		if (fork() == 0) {
			close(fd);
			handler(conn, arg);
			close(conn);
			_exit(0);
		}
		close(conn);
	}
}

static void echo_handler(int conn, long arg) { (void)arg; serve_echo(conn); }
static void source_handler(int conn, long arg) { (void)arg; serve_source(conn); }
static void close_handler(int conn, long arg) { serve_close_after(conn, arg); }

int main(int argc, char **argv)
{
	signal(SIGPIPE, SIG_IGN);
	if (argc == 3 && !strcmp(argv[1], "echo"))
		serve((unsigned)atol(argv[2]), echo_handler, 0);
	if (argc == 3 && !strcmp(argv[1], "source"))
		serve((unsigned)atol(argv[2]), source_handler, 0);
	if (argc == 4 && !strcmp(argv[1], "close-after"))
		serve((unsigned)atol(argv[3]), close_handler, atol(argv[2]));
	if (argc == 4 && !strcmp(argv[1], "connect")) {
		struct sockaddr_vm addr = {.svm_family = AF_VSOCK,
					   .svm_cid = (unsigned)atol(argv[2]),
					   .svm_port = (unsigned)atol(argv[3])};
		int fd = socket(AF_VSOCK, SOCK_STREAM, 0);
		if (fd < 0)
			return fail("socket");
		if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0)
			return fail("connect");
		return relay(fd);
	}
	if (argc == 3 && !strcmp(argv[1], "accept")) {
		int fd = listen_on((unsigned)atol(argv[2]));
		int conn = accept(fd, NULL, NULL);
		if (conn < 0)
			return fail("accept");
		close(fd);
		return relay(conn);
	}
	fprintf(stderr, "usage: vsock-helper echo|source PORT | close-after N PORT |"
			" connect CID PORT | accept PORT\n");
	return 1;
}
