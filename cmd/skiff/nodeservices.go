package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"

	"github.com/miekg/dns"

	"github.com/skiff-sh/skiff/netproxy"
	"github.com/skiff-sh/skiff/worker"
)

// nodeServiceOptions are the flags of the Service plumbing a worker runs
// beside its agent: netproxy and the node's DNS server.
type nodeServiceOptions struct {
	proxyMode     string
	clusterDomain string
	dnsUpstreams  string
}

func defaultNodeServiceOptions() nodeServiceOptions {
	return nodeServiceOptions{proxyMode: netproxy.ModeNFTables, clusterDomain: netproxy.DefaultDNSConfig().Domain}
}

// nodeServices runs netproxy and the DNS server of one worker, fed by one
// shared Services/Endpoints cache over the agent's API client. (The worker
// package may not import netproxy, so main joins them.)
type nodeServices struct {
	agent *worker.Agent
	log   *slog.Logger
	cache *netproxy.Cache
	proxy *netproxy.Proxy // nil with --proxy-mode none
	dns   *netproxy.DNS   // nil without a pod network
}

func newNodeServices(a *worker.Agent, cfg worker.Config, o nodeServiceOptions, log *slog.Logger) (*nodeServices, error) {
	ns := &nodeServices{agent: a, log: log}
	if cfg.Hollow {
		return ns, nil // hollow nodes forward nothing
	}
	ns.cache = netproxy.NewCache(a.APIClient, log)
	switch o.proxyMode {
	case "none":
	case netproxy.ModeNFTables, netproxy.ModeUserspace:
		pcfg := netproxy.DefaultConfig()
		pcfg.Mode = o.proxyMode
		pcfg.NodeIPs = []string{a.NodeIP()}
		pcfg.ClusterCIDR = cfg.ClusterCIDR
		pcfg.Cache, pcfg.Logger = ns.cache, log
		p, err := netproxy.New(pcfg, nil)
		if err != nil {
			return nil, fmt.Errorf("--proxy-mode %s: %w", o.proxyMode, err)
		}
		ns.proxy = p
	default:
		return nil, fmt.Errorf("--proxy-mode %q: want nftables, userspace or none", o.proxyMode)
	}
	if cfg.PodNetwork == worker.PodNetworkNone {
		return ns, nil
	}
	dcfg := netproxy.DefaultDNSConfig()
	dcfg.Domain = o.clusterDomain
	dcfg.Cache, dcfg.Logger = ns.cache, log
	switch up := strings.TrimSpace(o.dnsUpstreams); up {
	case "none":
	case "":
		if rc, err := dns.ClientConfigFromFile("/etc/resolv.conf"); err == nil {
			for _, s := range rc.Servers {
				dcfg.Upstreams = append(dcfg.Upstreams, net.JoinHostPort(s, rc.Port))
			}
		}
	default:
		dcfg.Upstreams = splitComma(up)
	}
	d, err := netproxy.NewDNS(dcfg, nil)
	if err != nil {
		return nil, fmt.Errorf("node DNS server: %w", err)
	}
	ns.dns = d
	return ns, nil
}

// run runs the agent (runAgent) with the proxy and DNS server beside it
// until ctx ends; with cleanup the proxy's rules are removed afterwards.
func (ns *nodeServices) run(ctx context.Context, runAgent func(context.Context) error, cleanup bool) error {
	if ns.cache == nil {
		return runAgent(ctx)
	}
	sctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { ns.report("service cache", ns.cache.Run(sctx)) })
	if ns.proxy != nil {
		wg.Go(func() { ns.report("netproxy", ns.proxy.Run(sctx)) })
	}
	if ns.dns != nil {
		wg.Go(func() {
			gw, err := ns.agent.PodGateway(sctx)
			if err != nil {
				ns.report("node DNS server", err)
				return
			}
			ns.report("node DNS server", ns.dns.Run(sctx, net.JoinHostPort(gw.String(), "53")))
		})
	}
	err := runAgent(ctx)
	cancel()
	wg.Wait()
	if cleanup && ns.proxy != nil {
		if cerr := ns.proxy.Cleanup(); cerr != nil {
			ns.log.Warn("remove the Service rules", "err", cerr)
		}
	}
	return err
}

func (ns *nodeServices) report(what string, err error) {
	if err != nil && !errors.Is(err, context.Canceled) {
		ns.log.Error(what+" stopped", "err", err)
	}
}
