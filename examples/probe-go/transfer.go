package main

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"
)

// cmdEchoLoad opens CONNECTIONS connections to a TCP echo server at once and, on each, writes
// BYTES of pseudo-random data while reading the echo back; every echo must hash to what was
// sent. Prints "connections=N ok=N failed=N bytes=N seconds=S" (bytes counted each way).
func cmdEchoLoad(args []string) int {
	if len(args) != 3 {
		return usage("echo-load needs CONNECTIONS BYTES HOST:PORT")
	}
	connections, okConnections := parseCount(args[0])
	size, okSize := parseCount(args[1])
	if !okConnections || !okSize || connections == 0 {
		return usage("echo-load needs CONNECTIONS BYTES HOST:PORT")
	}
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		ok       int
		firstErr error
	)
	start := time.Now()
	for i := 0; i < connections; i++ {
		wg.Add(1)
		go func(seed int64) {
			defer wg.Done()
			err := echoOnce(args[2], size, seed)
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				ok++
			} else if firstErr == nil {
				firstErr = err
			}
		}(int64(i + 1))
	}
	wg.Wait()
	elapsed := time.Since(start).Seconds()
	fmt.Printf("connections=%d ok=%d failed=%d bytes=%d seconds=%.3f\n",
		connections, ok, connections-ok, int64(ok)*int64(size), elapsed)
	if firstErr != nil {
		return networkFailure("echo-load", args[2], firstErr)
	}
	return 0
}

func echoOnce(address string, size int, seed int64) error {
	conn, err := net.DialTimeout("tcp", address, networkTimeout)
	if err != nil {
		return err
	}
	defer conn.Close()
	payload := make([]byte, size)
	rand.New(rand.NewSource(seed)).Read(payload)
	sent := sha256.Sum256(payload)
	writeErr := make(chan error, 1)
	go func() {
		_, err := conn.Write(payload)
		if err == nil {
			err = conn.(*net.TCPConn).CloseWrite()
		}
		writeErr <- err
	}()
	digest := sha256.New()
	received, err := io.Copy(digest, conn)
	if err != nil {
		return err
	}
	if err := <-writeErr; err != nil {
		return err
	}
	if received != int64(size) || !bytes.Equal(digest.Sum(nil), sent[:]) {
		return fmt.Errorf("connection %d: %d bytes came back, not the %d sent", seed, received, size)
	}
	return nil
}

// cmdFetch downloads URL and discards the body; prints "bytes=N seconds=S" for the transfer
// alone (from the request to the last byte), so a benchmark leaves start-up out.
func cmdFetch(args []string) int {
	if len(args) != 1 {
		return usage("fetch needs URL")
	}
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	start := time.Now()
	response, err := client.Get(args[0])
	if err != nil {
		return networkFailure("fetch", args[0], err)
	}
	defer response.Body.Close()
	received, err := io.Copy(io.Discard, response.Body)
	if err != nil {
		return fail("fetch", args[0], err)
	}
	fmt.Printf("bytes=%d seconds=%.6f\n", received, time.Since(start).Seconds())
	if response.StatusCode >= 400 {
		fmt.Fprintf(os.Stderr, "probe: fetch %s: HTTP status %d\n", args[0], response.StatusCode)
		return exitNegative
	}
	return 0
}

// cmdDialLoop dials HOST:PORT N times one after the other, closing each connection at once;
// prints "total=N seconds=S" (the benchmark divides for the cost of one connect).
func cmdDialLoop(args []string) int {
	if len(args) != 2 {
		return usage("dial-loop needs N HOST:PORT")
	}
	count, err := strconv.Atoi(args[0])
	if err != nil || count <= 0 {
		return usage("dial-loop needs N HOST:PORT")
	}
	start := time.Now()
	for i := 0; i < count; i++ {
		conn, err := net.DialTimeout("tcp", args[1], networkTimeout)
		if err != nil {
			return networkFailure("dial-loop", args[1], err)
		}
		conn.Close()
	}
	fmt.Printf("total=%d seconds=%.6f\n", count, time.Since(start).Seconds())
	return 0
}
