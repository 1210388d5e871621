// Command probe-go is the static Go counterpart of probe.c: the same subcommand names and output
// formats, but every call goes through the Go runtime and standard library (raw syscalls, no libc,
// goroutines on many threads, the pure-Go resolver), which is what a CGO_ENABLED=0 program does.
//
// Exit codes: the errno of the failing call (after "probe: <op> <what>: <error>" on stderr);
// 1 = a negative answer (env NAME unset, HTTP status >= 400); 64 = usage error;
// 68 = name resolution failed; 127 = exec failed; 128+N = the child was killed by signal N.
package main

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"syscall"
)

const (
	exitNegative   = 1
	exitUsage      = 64
	exitNoHost     = 68
	exitExecFailed = 127
)

type command struct {
	run       func(args []string) int
	arguments string
}

var commands map[string]command

func init() {
	commands = map[string]command{
		"cat":        {cmdCat, "PATH..."},
		"stat":       {cmdStat, "PATH"},
		"lstat":      {cmdLstat, "PATH"},
		"ls":         {cmdLs, "DIR"},
		"readlink":   {cmdReadlink, "PATH"},
		"write":      {cmdWrite, "PATH TEXT"},
		"append":     {cmdAppend, "PATH TEXT"},
		"rename":     {cmdRename, "OLD NEW"},
		"unlink":     {cmdUnlink, "PATH"},
		"mkdir":      {cmdMkdir, "PATH"},
		"rmdir":      {cmdRmdir, "PATH"},
		"cwd":        {cmdCwd, ""},
		"chdir-cat":  {cmdChdirCat, "DIR FILE"},
		"env":        {cmdEnv, "NAME"},
		"envall":     {cmdEnvall, ""},
		"exit":       {cmdExit, "STATUS"},
		"raise":      {cmdRaise, "SIGNAL"},
		"echo-stdin": {cmdEchoStdin, ""},
		"fork-exec":  {cmdForkExec, "PROG [ARGS...]"},
		"openloop":   {cmdOpenloop, "N PATH"},
		"statloop":   {cmdStatloop, "N GOROUTINES [PATH]"},
		"goroutines": {cmdGoroutines, "GOROUTINES CALLS [PATH]"},
		"resolve":    {cmdResolve, "NAME"},
		"dial":       {cmdDial, "HOST:PORT"},
		"http-get":   {cmdHTTPGet, "URL"},
		"serve":      {cmdServe, "ADDR (e.g. :8080, 127.0.0.1:0)"},
		"echo-load":  {cmdEchoLoad, "CONNECTIONS BYTES HOST:PORT"},
		"fetch":      {cmdFetch, "URL"},
		"dial-loop":  {cmdDialLoop, "N HOST:PORT"},
		"udp-echo":   {cmdUDPEcho, "ADDR (e.g. :9000)"},
		"udp-ask":    {cmdUDPAsk, "HOST:PORT TEXT"},
		"help":       {cmdHelp, ""},
	}
}

func main() {
	if len(os.Args) < 2 {
		os.Exit(usage("missing SUBCOMMAND"))
	}
	cmd, ok := commands[os.Args[1]]
	if !ok {
		fmt.Fprintf(os.Stderr, "probe: unknown subcommand %s (run `probe-go help` for the list)\n", os.Args[1])
		os.Exit(exitUsage)
	}
	os.Exit(cmd.run(os.Args[2:]))
}

func cmdHelp([]string) int {
	names := make([]string, 0, len(commands))
	for name := range commands {
		names = append(names, name)
	}
	sort.Strings(names)
	fmt.Println("usage: probe-go SUBCOMMAND [ARGS...]")
	for _, name := range names {
		fmt.Printf("  %s %s\n", name, commands[name].arguments)
	}
	return 0
}

func usage(message string) int {
	fmt.Fprintf(os.Stderr, "probe: %s (run `probe-go help` for the list of subcommands)\n", message)
	return exitUsage
}

// fail reports err the way probe.c does and returns the exit code: the errno when there is one.
func fail(op, what string, err error) int {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		fmt.Fprintf(os.Stderr, "probe: %s %s: %s\n", op, what, errno.Error())
		return int(errno)
	}
	fmt.Fprintf(os.Stderr, "probe: %s %s: %v\n", op, what, err)
	return exitNegative
}

func parseCount(text string) (int, bool) {
	value, err := strconv.Atoi(text)
	return value, err == nil && value >= 0
}
