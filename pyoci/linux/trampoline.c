/*
 * The installed commands `pyoci` and `containerd-shim-pyoci-v2`: start the interpreter
 * isolated and without `site` (python -IS) on the Python script next to this program.
 *
 *   DIR/NAME             this program (DIR/NAME: /proc/self/exe, symbolic links resolved)
 *   DIR/NAME-script.py   the Python part; its first line, "#!INTERPRETER", written by the
 *                        installer (pip replaces a wheel's "#!python" with the interpreter
 *                        it installs for, but drops any flags: hence this program)
 *
 * executes INTERPRETER -IS DIR/NAME-script.py ARG... with this process's environment, as
 * setuptools' Windows launchers execute NAME-script.py. Without `site` (no .pth files,
 * sitecustomize, editable-install finders) and without PYTHON* variables the interpreter
 * starts in about half the time, and pyoci starts one for every command: see setup.py.
 *
 * No libc (nolibc.h): static, nothing to load; every failure is one line on stderr ("pyoci:
 * cannot open DIR/NAME-script.py: No such file or directory") and exit status 127, as a
 * shell's for a command it cannot execute.
 */

#define NOLIBC_FAIL_STATUS 127
#include "nolibc.h"

#define PATH_MAX 4096
#define SUFFIX "-script.py"

static char script[PATH_MAX + sizeof(SUFFIX)];
static char first[PATH_MAX + 3];

__attribute__((noreturn, used)) void nolibc_main(long *sp)
{
	long argc = sp[0];
	char **argv = (char **)(sp + 1);
	char **envp = argv + argc + 1;
	char *args[argc + 3];
	char *interp;
	long n, fd, i;

	n = sys4(SYS_readlinkat, AT_FDCWD, "/proc/self/exe", script, PATH_MAX);
	if (n < 0)
		fail3("cannot read /proc/self/exe", NULL, NULL, n);
	if (n >= PATH_MAX)
		fail3("cannot read /proc/self/exe", NULL, NULL, -36);	/* ENAMETOOLONG */
	for (i = 0; i < (long)sizeof(SUFFIX); i++)
		script[n + i] = SUFFIX[i];

	fd = sys4(SYS_openat, AT_FDCWD, script, O_RDONLY | O_CLOEXEC, 0);
	if (fd < 0)
		fail3("cannot open ", script, NULL, fd);
	n = sys3(SYS_read, fd, first, sizeof(first) - 1);
	sys1(SYS_close, fd);
	if (n < 0)
		fail3("cannot read ", script, NULL, n);
	first[n] = 0;
	/* "#!" INTERPRETER [ARG]: as the kernel reads it, the interpreter ends at a blank */
	if (n < 3 || first[0] != '#' || first[1] != '!')
		fail3("no #! line in ", script, NULL, 0);
	interp = first + 2;
	while (*interp == ' ' || *interp == '\t')
		interp++;
	for (i = 0; interp[i] && interp[i] != '\n' && interp[i] != ' ' && interp[i] != '\t' &&
	     interp[i] != '\r'; i++)
		;
	if (!interp[i] || !i)
		fail3("no interpreter on the #! line of ", script, NULL, 0);
	interp[i] = 0;

	args[0] = interp;
	args[1] = "-IS";
	args[2] = script;
	for (i = 1; i < argc; i++)
		args[i + 2] = argv[i];
	args[argc + 2] = NULL;
	n = sys3(SYS_execve, interp, args, envp);
	fail3("cannot execute ", interp, NULL, n);
}
