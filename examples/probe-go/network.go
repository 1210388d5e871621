package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"syscall"
	"time"
)

const networkTimeout = 30 * time.Second

var errnoNames = map[syscall.Errno]string{
	syscall.EPERM: "EPERM", syscall.ENOENT: "ENOENT", syscall.EINTR: "EINTR",
	syscall.EACCES: "EACCES", syscall.EINVAL: "EINVAL", syscall.ENOSYS: "ENOSYS",
	syscall.EAFNOSUPPORT: "EAFNOSUPPORT", syscall.EADDRINUSE: "EADDRINUSE",
	syscall.EADDRNOTAVAIL: "EADDRNOTAVAIL", syscall.ENETDOWN: "ENETDOWN",
	syscall.ENETUNREACH: "ENETUNREACH", syscall.ECONNABORTED: "ECONNABORTED",
	syscall.ECONNRESET: "ECONNRESET", syscall.ETIMEDOUT: "ETIMEDOUT",
	syscall.ECONNREFUSED: "ECONNREFUSED", syscall.EHOSTDOWN: "EHOSTDOWN",
	syscall.EHOSTUNREACH: "EHOSTUNREACH", syscall.EINPROGRESS: "EINPROGRESS",
}

// networkFailure reports err and returns the exit code, separating resolution failures (68)
// from errno failures, as probe.c does.
func networkFailure(op, what string, err error) int {
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		fmt.Fprintf(os.Stderr, "probe: %s %s: %v\n", op, what, err)
		return exitNoHost
	}
	return fail(op, what, err)
}

func cmdResolve(args []string) int {
	if len(args) != 1 {
		return usage("resolve needs NAME")
	}
	ctx, cancel := context.WithTimeout(context.Background(), networkTimeout)
	defer cancel()
	addresses, err := net.DefaultResolver.LookupHost(ctx, args[0])
	if err != nil {
		return networkFailure("resolve", args[0], err)
	}
	for _, address := range addresses {
		fmt.Println(address)
	}
	return 0
}

func cmdDial(args []string) int {
	if len(args) != 1 {
		return usage("dial needs HOST:PORT")
	}
	conn, err := net.DialTimeout("tcp", args[0], networkTimeout)
	if err != nil {
		var errno syscall.Errno
		if errors.As(err, &errno) {
			name, known := errnoNames[errno]
			if !known {
				name = fmt.Sprintf("E%d", int(errno))
			}
			fmt.Println(name)
		}
		return networkFailure("dial", args[0], err)
	}
	defer conn.Close()
	fmt.Printf("local=%s remote=%s\n", conn.LocalAddr(), conn.RemoteAddr())
	return 0
}

func cmdHTTPGet(args []string) int {
	if len(args) != 1 {
		return usage("http-get needs URL")
	}
	// No proxy from the environment: the probe must make the connection itself.
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: networkTimeout}
	response, err := client.Get(args[0])
	if err != nil {
		return networkFailure("http-get", args[0], err)
	}
	defer response.Body.Close()
	if _, err := io.Copy(os.Stdout, response.Body); err != nil {
		return fail("http-get", args[0], err)
	}
	if response.StatusCode >= 400 {
		fmt.Fprintf(os.Stderr, "probe: http-get %s: HTTP status %d\n", args[0], response.StatusCode)
		return exitNegative
	}
	return 0
}

// serveRequest answers GET with a fixed body plus the request line, and POST with the sha256 and
// length of the body, so a client can tell its request arrived intact. Each request is also
// logged on stdout, which is all a test sees when the traffic is only mirrored to us.
func serveRequest(w http.ResponseWriter, r *http.Request) {
	requestLine := fmt.Sprintf("%s %s %s", r.Method, r.RequestURI, r.Proto)
	fmt.Printf("request %s\n", requestLine)
	switch r.Method {
	case http.MethodGet:
		fmt.Fprintf(w, "hello from probe-go\n%s\n", requestLine)
	case http.MethodPost:
		digest := sha256.New()
		length, err := io.Copy(digest, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "sha256=%x length=%d\n", digest.Sum(nil), length)
	default:
		http.Error(w, "only GET and POST", http.StatusMethodNotAllowed)
	}
}

func cmdServe(args []string) int {
	if len(args) != 1 {
		return usage("serve needs ADDR (e.g. :8080, 127.0.0.1:0)")
	}
	listener, err := net.Listen("tcp", args[0])
	if err != nil {
		return networkFailure("serve", args[0], err)
	}
	// The announced port is what a caller passing port 0 waits for (same line as probe.c).
	fmt.Printf("listening %d\n", listener.Addr().(*net.TCPAddr).Port)
	err = http.Serve(listener, http.HandlerFunc(serveRequest))
	return fail("serve", args[0], err)
}

// cmdUDPEcho answers every datagram with where it came from and what it held, so a client can
// tell which network its datagram left from.
func cmdUDPEcho(args []string) int {
	if len(args) != 1 {
		return usage("udp-echo needs ADDR (e.g. :9000)")
	}
	conn, err := net.ListenPacket("udp", args[0])
	if err != nil {
		return networkFailure("udp-echo", args[0], err)
	}
	fmt.Printf("listening %d\n", conn.LocalAddr().(*net.UDPAddr).Port)
	buffer := make([]byte, 65536)
	for {
		n, peer, err := conn.ReadFrom(buffer)
		if err != nil {
			return fail("udp-echo", args[0], err)
		}
		host, _, _ := net.SplitHostPort(peer.String())
		reply := fmt.Sprintf("from=%s data=%s", host, buffer[:n])
		if _, err := conn.WriteTo([]byte(reply), peer); err != nil {
			return fail("udp-echo", args[0], err)
		}
	}
}

// cmdUDPAsk sends one datagram and prints the one reply.
func cmdUDPAsk(args []string) int {
	if len(args) != 2 {
		return usage("udp-ask needs HOST:PORT TEXT")
	}
	conn, err := net.DialTimeout("udp", args[0], networkTimeout)
	if err != nil {
		return networkFailure("udp-ask", args[0], err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(networkTimeout)); err != nil {
		return fail("udp-ask", args[0], err)
	}
	if _, err := conn.Write([]byte(args[1])); err != nil {
		return networkFailure("udp-ask", args[0], err)
	}
	buffer := make([]byte, 65536)
	n, err := conn.Read(buffer)
	if err != nil {
		return networkFailure("udp-ask", args[0], err)
	}
	fmt.Printf("%s\n", buffer[:n])
	return 0
}
