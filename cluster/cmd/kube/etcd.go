package main

import (
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"go.etcd.io/etcd/server/v3/embed"
)

// newEtcdCommand runs a single-member etcd, embedded at the version the Kubernetes release
// itself depends on, listening for clients on one loopback URL only.
func newEtcdCommand() *cobra.Command {
	var dataDir, clientURL, peerURL string
	command := &cobra.Command{
		Use:   "etcd",
		Short: "single-member etcd for the test cluster",
		RunE: func(_ *cobra.Command, _ []string) error {
			client, err := url.Parse(clientURL)
			if err != nil {
				return fmt.Errorf("--listen-client-url: %w", err)
			}
			peer, err := url.Parse(peerURL)
			if err != nil {
				return fmt.Errorf("--listen-peer-url: %w", err)
			}
			cfg := embed.NewConfig()
			cfg.Name = "default"
			cfg.Dir = dataDir
			cfg.ListenClientUrls = []url.URL{*client}
			cfg.AdvertiseClientUrls = []url.URL{*client}
			cfg.ListenPeerUrls = []url.URL{*peer}
			cfg.AdvertisePeerUrls = []url.URL{*peer}
			cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
			cfg.LogLevel = "warn"
			server, err := embed.StartEtcd(cfg)
			if err != nil {
				return err
			}
			defer server.Close()
			<-server.Server.ReadyNotify()
			fmt.Fprintln(os.Stderr, "etcd: ready on", clientURL)
			signals := make(chan os.Signal, 1)
			signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
			select {
			case err := <-server.Err():
				return err
			case <-signals:
				return nil
			}
		},
	}
	command.Flags().StringVar(&dataDir, "data-dir", "etcd", "data directory")
	command.Flags().StringVar(&clientURL, "listen-client-url", "http://127.0.0.1:2379", "client URL")
	command.Flags().StringVar(&peerURL, "listen-peer-url", "http://127.0.0.1:2380", "peer URL")
	return command
}
