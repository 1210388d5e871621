package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

func cmdEnv(args []string) int {
	if len(args) != 1 {
		return usage("env needs NAME")
	}
	value, ok := os.LookupEnv(args[0])
	if !ok {
		return exitNegative
	}
	fmt.Println(value)
	return 0
}

func cmdEnvall(args []string) int {
	if len(args) != 0 {
		return usage("envall takes no arguments")
	}
	for _, entry := range os.Environ() {
		fmt.Println(entry)
	}
	return 0
}

func cmdExit(args []string) int {
	if len(args) != 1 {
		return usage("exit needs a STATUS from 0 to 255")
	}
	status, ok := parseCount(args[0])
	if !ok || status > 255 {
		return usage("exit needs a STATUS from 0 to 255")
	}
	return status
}

var signalNames = map[string]syscall.Signal{
	"HUP": syscall.SIGHUP, "INT": syscall.SIGINT, "QUIT": syscall.SIGQUIT,
	"ILL": syscall.SIGILL, "TRAP": syscall.SIGTRAP, "ABRT": syscall.SIGABRT,
	"BUS": syscall.SIGBUS, "FPE": syscall.SIGFPE, "KILL": syscall.SIGKILL,
	"USR1": syscall.SIGUSR1, "SEGV": syscall.SIGSEGV, "USR2": syscall.SIGUSR2,
	"PIPE": syscall.SIGPIPE, "ALRM": syscall.SIGALRM, "TERM": syscall.SIGTERM,
	"CHLD": syscall.SIGCHLD, "CONT": syscall.SIGCONT, "STOP": syscall.SIGSTOP,
	"TSTP": syscall.SIGTSTP, "TTIN": syscall.SIGTTIN, "TTOU": syscall.SIGTTOU,
	"URG": syscall.SIGURG, "XCPU": syscall.SIGXCPU, "XFSZ": syscall.SIGXFSZ,
	"VTALRM": syscall.SIGVTALRM, "PROF": syscall.SIGPROF, "WINCH": syscall.SIGWINCH,
	"IO": syscall.SIGIO, "SYS": syscall.SIGSYS,
}

func parseSignal(text string) (syscall.Signal, bool) {
	if number, ok := parseCount(text); ok {
		return syscall.Signal(number), number > 0 && number < 65
	}
	sig, ok := signalNames[strings.TrimPrefix(text, "SIG")]
	return sig, ok
}

// cmdRaise sends the signal to this process. Unlike probe.c it keeps the Go runtime's handlers:
// HUP, INT, TERM (and KILL) kill the program by that signal; QUIT, ABRT and the like make the
// runtime dump goroutines and exit 2; other signals are caught and ignored by the runtime.
func cmdRaise(args []string) int {
	if len(args) != 1 {
		return usage("raise needs a SIGNAL (number, TERM or SIGTERM)")
	}
	sig, ok := parseSignal(args[0])
	if !ok {
		return usage("raise needs a SIGNAL (number, TERM or SIGTERM)")
	}
	if err := syscall.Kill(os.Getpid(), sig); err != nil {
		return fail("raise", args[0], err)
	}
	// The runtime handles the signal on another thread: give it time to act before saying so.
	time.Sleep(2 * time.Second)
	fmt.Printf("survived %s\n", args[0])
	return 0
}

func cmdEchoStdin(args []string) int {
	if len(args) != 0 {
		return usage("echo-stdin takes no arguments")
	}
	if _, err := io.Copy(os.Stdout, os.Stdin); err != nil {
		return fail("echo-stdin", "stdin", err)
	}
	return 0
}

func cmdForkExec(args []string) int {
	if len(args) == 0 {
		return usage("fork-exec needs PROG [ARGS...]")
	}
	child := exec.Command(args[0], args[1:]...)
	child.Stdin, child.Stdout, child.Stderr = os.Stdin, os.Stdout, os.Stderr
	err := child.Run()
	var exitErr *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &exitErr):
		status := exitErr.Sys().(syscall.WaitStatus)
		if status.Signaled() {
			return 128 + int(status.Signal())
		}
		return status.ExitStatus()
	default:
		fail("fork-exec", args[0], err)
		return exitExecFailed
	}
}
