// Command go-run-module is run with `go run . FILE [ENVNAME]` to show that the Go toolchain
// itself (compiler, linker, a freshly built static binary) works under the tracer. It prints its
// arguments and one environment variable (GREETING unless ENVNAME says otherwise), then FILE.
package main

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

func main() {
	if len(os.Args) < 2 || len(os.Args) > 3 {
		fmt.Fprintln(os.Stderr, "go-run-module: usage: go run . FILE [ENVNAME]")
		os.Exit(64)
	}
	envName := "GREETING"
	if len(os.Args) == 3 {
		envName = os.Args[2]
	}
	value, found := os.LookupEnv(envName)
	if !found {
		value = "<unset>"
	}
	fmt.Printf("go-run-module args=%q %s=%s\n", os.Args[1:], envName, value)
	content, err := os.ReadFile(os.Args[1])
	if err != nil {
		fmt.Fprintf(os.Stderr, "go-run-module: read %s: %v\n", os.Args[1], err)
		var errno syscall.Errno
		if errors.As(err, &errno) {
			os.Exit(int(errno))
		}
		os.Exit(1)
	}
	os.Stdout.Write(content)
}
