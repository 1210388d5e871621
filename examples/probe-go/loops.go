package main

import (
	"fmt"
	"os"
	"sync"
)

func cmdOpenloop(args []string) int {
	if len(args) != 2 {
		return usage("openloop needs N PATH")
	}
	count, ok := parseCount(args[0])
	if !ok {
		return usage("openloop needs N PATH")
	}
	for i := 0; i < count; i++ {
		file, err := os.Open(args[1])
		if err != nil {
			return fail("openloop", args[1], err)
		}
		file.Close()
	}
	fmt.Printf("total=%d\n", count)
	return 0
}

// fanOut runs work(calls) on each of goroutines goroutines, splitting total as evenly as
// possible, and returns the number of completed calls and the first error.
func fanOut(goroutines, total int, work func(calls int) (int, error)) (int, error) {
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		done     int
		firstErr error
	)
	for g := 0; g < goroutines; g++ {
		calls := total / goroutines
		if g < total%goroutines {
			calls++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			completed, err := work(calls)
			mu.Lock()
			defer mu.Unlock()
			done += completed
			if err != nil && firstErr == nil {
				firstErr = err
			}
		}()
	}
	wg.Wait()
	return done, firstErr
}

func cmdStatloop(args []string) int {
	if len(args) < 2 || len(args) > 3 {
		return usage("statloop needs N GOROUTINES [PATH]")
	}
	count, okCount := parseCount(args[0])
	goroutines, okGoroutines := parseCount(args[1])
	if !okCount || !okGoroutines || goroutines == 0 {
		return usage("statloop needs N GOROUTINES [PATH]")
	}
	path := "/"
	if len(args) == 3 {
		path = args[2]
	}
	done, err := fanOut(goroutines, count, func(calls int) (int, error) {
		for i := 0; i < calls; i++ {
			if _, err := os.Stat(path); err != nil {
				return i, err
			}
		}
		return calls, nil
	})
	fmt.Printf("total=%d\n", done)
	if err != nil {
		return fail("statloop", path, err)
	}
	return 0
}

// cmdGoroutines makes each goroutine do CALLS rounds of os.Stat + os.Open + Close; the total
// printed at the end proves no goroutine (and no thread under it) was lost or deadlocked.
func cmdGoroutines(args []string) int {
	if len(args) < 2 || len(args) > 3 {
		return usage("goroutines needs GOROUTINES CALLS [PATH]")
	}
	goroutines, okGoroutines := parseCount(args[0])
	calls, okCalls := parseCount(args[1])
	if !okGoroutines || !okCalls || goroutines == 0 {
		return usage("goroutines needs GOROUTINES CALLS [PATH]")
	}
	path := "/etc/hostname"
	if len(args) == 3 {
		path = args[2]
	}
	done, err := fanOut(goroutines, goroutines*calls, func(calls int) (int, error) {
		for i := 0; i < calls; i++ {
			if _, err := os.Stat(path); err != nil {
				return i, err
			}
			file, err := os.Open(path)
			if err != nil {
				return i, err
			}
			file.Close()
		}
		return calls, nil
	})
	fmt.Printf("total=%d\n", done)
	if err != nil {
		return fail("goroutines", path, err)
	}
	return 0
}
