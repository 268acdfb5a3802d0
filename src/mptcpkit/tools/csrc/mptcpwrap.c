/*
 * mptcpkit run: an LD_PRELOAD socket() wrapper that turns TCP sockets into MPTCP sockets.
 *
 * AF_INET / AF_INET6 stream sockets asked for with protocol 0 or IPPROTO_TCP are created with
 * IPPROTO_MPTCP (262) instead. If the kernel refuses MPTCP (disabled by sysctl, or too old), the
 * original TCP socket is created so the program keeps working. With MPTCPKIT_RUN_DEBUG set in the
 * environment, each decision is logged on stderr.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef IPPROTO_MPTCP
#define IPPROTO_MPTCP 262
#endif

#define SOCK_TYPE_MASK 0xf

typedef int (*socket_fn)(int, int, int);

static socket_fn real_socket(void)
{
	static socket_fn fn;

	if (!fn)
		fn = (socket_fn)dlsym(RTLD_NEXT, "socket");
	return fn;
}

static int debug_enabled(void)
{
	const char *v = getenv("MPTCPKIT_RUN_DEBUG");

	return v && *v && *v != '0';
}

static const char *family_name(int family)
{
	return family == AF_INET ? "AF_INET" : "AF_INET6";
}

int socket(int family, int type, int protocol)
{
	socket_fn next = real_socket();
	int fd, saved;

	if (!next) {
		errno = ENOSYS;
		return -1;
	}
	if ((family != AF_INET && family != AF_INET6) || (type & SOCK_TYPE_MASK) != SOCK_STREAM ||
	    (protocol != 0 && protocol != IPPROTO_TCP))
		return next(family, type, protocol);

	fd = next(family, type, IPPROTO_MPTCP);
	if (fd >= 0) {
		if (debug_enabled())
			fprintf(stderr, "mptcpkit run: pid %d: socket(%s, SOCK_STREAM, %d) -> IPPROTO_MPTCP, fd %d\n",
				(int)getpid(), family_name(family), protocol, fd);
		return fd;
	}
	saved = errno;
	fd = next(family, type, protocol);
	if (debug_enabled())
		fprintf(stderr, "mptcpkit run: pid %d: MPTCP socket refused (errno %d), kept TCP, fd %d\n",
			(int)getpid(), saved, fd);
	return fd;
}
