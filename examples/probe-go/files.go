package main

import (
	"fmt"
	"io"
	"os"
	"syscall"
)

func cmdCat(args []string) int {
	if len(args) == 0 {
		return usage("cat needs PATH...")
	}
	status := 0
	for _, path := range args {
		if err := catOne(path); err != nil {
			if code := fail("cat", path, err); status == 0 {
				status = code
			}
		}
	}
	return status
}

func catOne(path string) error {
	file, err := os.Open(path)
	if err != nil {
		return err
	}
	defer file.Close()
	_, err = io.Copy(os.Stdout, file)
	return err
}

func fileType(mode uint32) string {
	switch mode & syscall.S_IFMT {
	case syscall.S_IFREG:
		return "regular"
	case syscall.S_IFDIR:
		return "directory"
	case syscall.S_IFLNK:
		return "symlink"
	case syscall.S_IFIFO:
		return "fifo"
	case syscall.S_IFSOCK:
		return "socket"
	case syscall.S_IFCHR:
		return "char"
	case syscall.S_IFBLK:
		return "block"
	}
	return "unknown"
}

func printStat(op string, args []string, stat func(string) (os.FileInfo, error)) int {
	if len(args) != 1 {
		return usage(op + " needs PATH")
	}
	info, err := stat(args[0])
	if err != nil {
		return fail(op, args[0], err)
	}
	raw := info.Sys().(*syscall.Stat_t)
	fmt.Printf("size=%d mode=0%o type=%s nlink=%d ino=%d\n",
		raw.Size, raw.Mode&0o7777, fileType(raw.Mode), raw.Nlink, raw.Ino)
	return 0
}

func cmdStat(args []string) int  { return printStat("stat", args, os.Stat) }
func cmdLstat(args []string) int { return printStat("lstat", args, os.Lstat) }

func cmdLs(args []string) int {
	if len(args) != 1 {
		return usage("ls needs DIR")
	}
	entries, err := os.ReadDir(args[0]) // sorted by name, like probe.c's strcmp order
	if err != nil {
		return fail("ls", args[0], err)
	}
	for _, entry := range entries {
		fmt.Println(entry.Name())
	}
	return 0
}

func cmdReadlink(args []string) int {
	if len(args) != 1 {
		return usage("readlink needs PATH")
	}
	target, err := os.Readlink(args[0])
	if err != nil {
		return fail("readlink", args[0], err)
	}
	fmt.Println(target)
	return 0
}

func writeFile(op string, args []string, flag int) int {
	if len(args) != 2 {
		return usage(op + " needs PATH TEXT")
	}
	file, err := os.OpenFile(args[0], os.O_WRONLY|os.O_CREATE|flag, 0o644)
	if err == nil {
		_, err = file.WriteString(args[1])
		if closeErr := file.Close(); err == nil {
			err = closeErr
		}
	}
	if err != nil {
		return fail(op, args[0], err)
	}
	return 0
}

func cmdWrite(args []string) int  { return writeFile("write", args, os.O_TRUNC) }
func cmdAppend(args []string) int { return writeFile("append", args, os.O_APPEND) }

func cmdRename(args []string) int {
	if len(args) != 2 {
		return usage("rename needs OLD NEW")
	}
	if err := os.Rename(args[0], args[1]); err != nil {
		return fail("rename", args[0], err)
	}
	return 0
}

// pathCall runs one single-path syscall; unlink and rmdir are called directly because os.Remove
// tries both, and the point is to make exactly the call the subcommand names.
func pathCall(op string, args []string, call func(string) error) int {
	if len(args) != 1 {
		return usage(op + " needs PATH")
	}
	if err := call(args[0]); err != nil {
		return fail(op, args[0], err)
	}
	return 0
}

func cmdUnlink(args []string) int { return pathCall("unlink", args, syscall.Unlink) }
func cmdRmdir(args []string) int  { return pathCall("rmdir", args, syscall.Rmdir) }
func cmdMkdir(args []string) int {
	return pathCall("mkdir", args, func(path string) error { return os.Mkdir(path, 0o755) })
}

func cmdCwd(args []string) int {
	if len(args) != 0 {
		return usage("cwd takes no arguments")
	}
	dir, err := os.Getwd()
	if err != nil {
		return fail("cwd", ".", err)
	}
	fmt.Println(dir)
	return 0
}

func cmdChdirCat(args []string) int {
	if len(args) != 2 {
		return usage("chdir-cat needs DIR FILE")
	}
	if err := os.Chdir(args[0]); err != nil {
		return fail("chdir-cat", args[0], err)
	}
	return cmdCat(args[1:])
}
