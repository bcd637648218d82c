package nsbox

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/nsbox/nsbox/api"
	sandboxnet "github.com/nsbox/nsbox/net"
)

// Prometheus metrics: GET /metrics on the API (and on --metrics-listen). Counters and
// histograms are kept as things happen; the per-sandbox figures, the sandboxes by status,
// the warm pool and the network's rule and conntrack counts are read when scraped. Per-sandbox
// series are labelled by sandbox id and image only, and go when the sandbox goes.

// metrics is the daemon's Prometheus registry and what it counts as things happen.
type metrics struct {
	reg      *prometheus.Registry
	serve    http.Handler
	requests *prometheus.CounterVec
	poolTake *prometheus.CounterVec
	create   prometheus.Histogram
	remove   prometheus.Histogram
	exec     prometheus.Histogram
	oomKills prometheus.Counter
	agentEnd prometheus.Counter
}

// latencyBuckets are the buckets of the create, remove and exec histograms (seconds).
var latencyBuckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}

func newMetrics(r *Runtime) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "nsbox_api_requests_total",
			Help: "API requests answered, by method, route (the endpoint's pattern) and HTTP status code."}, []string{"method", "route", "code"}),
		poolTake: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "nsbox_warm_pool_takes_total",
			Help: "Creates that could use the warm pool, by image and result: hit (a warm container was taken) or miss (one was started)."}, []string{"image", "result"}),
		create: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "nsbox_create_duration_seconds",
			Help: "Time to answer a successful sandbox create (image pulls included).", Buckets: latencyBuckets}),
		remove: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "nsbox_remove_duration_seconds",
			Help: "Time to answer a successful sandbox remove (the grace period of a remove without force included).", Buckets: latencyBuckets}),
		exec: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "nsbox_exec_duration_seconds",
			Help: "Time from an exec request to the end of its command's answer.", Buckets: latencyBuckets}),
		oomKills: prometheus.NewCounter(prometheus.CounterOpts{Name: "nsbox_oom_kills_total",
			Help: "Processes the kernel's OOM killer killed in sandboxes, as seen by the daemon's monitor."}),
		agentEnd: prometheus.NewCounter(prometheus.CounterOpts{Name: "nsbox_agent_exits_total",
			Help: "Sandbox agents (PID 1) that exited by themselves, failing their sandbox (an agent is never restarted)."}),
	}
	m.reg.MustRegister(m.requests, m.poolTake, m.create, m.remove, m.exec, m.oomKills, m.agentEnd,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), &scrape{r: r})
	m.serve = promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
	return m
}

// instrument counts the requests h answers for one endpoint.
func (m *metrics) instrument(method, route string, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, req *http.Request) {
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		h(sw, req)
		m.requests.WithLabelValues(method, route, strconv.Itoa(sw.status)).Inc()
	}
}

// observe adds the time since began to h when err is nil.
func observe(h prometheus.Histogram, began time.Time, err error) {
	if err == nil {
		h.Observe(time.Since(began).Seconds())
	}
}

// scrape collects what is read when metrics are scraped.
type scrape struct{ r *Runtime }

var (
	sandboxLabels   = []string{"sandbox", "image"}
	descSandboxes   = prometheus.NewDesc("nsbox_sandboxes", "Sandboxes the daemon knows, by status and image.", []string{"status", "image"}, nil)
	descPoolReady   = prometheus.NewDesc("nsbox_warm_pool_ready", "Started containers ready in the warm pool, by image.", []string{"image"}, nil)
	descPoolTarget  = prometheus.NewDesc("nsbox_warm_pool_target", "Started containers the warm pool keeps ready now, by image: its base, raised by demand.", []string{"image"}, nil)
	descNFTRules    = prometheus.NewDesc("nsbox_nft_rules", "Rules in the daemon's nftables table.", nil, nil)
	descConntrack   = prometheus.NewDesc("nsbox_conntrack_entries", "Connections the host's conntrack table tracks (all of the host's).", nil, nil)
	descCPU         = prometheus.NewDesc("nsbox_sandbox_cpu_seconds_total", "CPU time a sandbox's processes used.", sandboxLabels, nil)
	descMemory      = prometheus.NewDesc("nsbox_sandbox_memory_bytes", "Memory charged to a sandbox (page cache included).", sandboxLabels, nil)
	descMemoryLimit = prometheus.NewDesc("nsbox_sandbox_memory_limit_bytes", "A sandbox's memory limit (0: none).", sandboxLabels, nil)
	descPids        = prometheus.NewDesc("nsbox_sandbox_pids", "Tasks in a sandbox.", sandboxLabels, nil)
	descOOM         = prometheus.NewDesc("nsbox_sandbox_oom_kills_total", "Processes the OOM killer killed in a sandbox.", sandboxLabels, nil)
	descDisk        = prometheus.NewDesc("nsbox_sandbox_disk_used_bytes", "Used space of a sandbox's disk quota (only sandboxes with limits.diskMB).", sandboxLabels, nil)
	descRxBytes     = prometheus.NewDesc("nsbox_sandbox_network_receive_bytes_total", "Bytes a sandbox received.", sandboxLabels, nil)
	descTxBytes     = prometheus.NewDesc("nsbox_sandbox_network_transmit_bytes_total", "Bytes a sandbox sent.", sandboxLabels, nil)
	descRxPackets   = prometheus.NewDesc("nsbox_sandbox_network_receive_packets_total", "Packets a sandbox received.", sandboxLabels, nil)
	descTxPackets   = prometheus.NewDesc("nsbox_sandbox_network_transmit_packets_total", "Packets a sandbox sent.", sandboxLabels, nil)
)

func (s *scrape) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descSandboxes, descPoolReady, descPoolTarget, descNFTRules, descConntrack, descCPU, descMemory, descMemoryLimit,
		descPids, descOOM, descDisk, descRxBytes, descTxBytes, descRxPackets, descTxPackets} {
		ch <- d
	}
}

func (s *scrape) Collect(ch chan<- prometheus.Metric) {
	r := s.r
	type key struct{ status, image string }
	counts := map[key]int{}
	how := r.bulkRead(false)
	for _, sb := range r.all() {
		of := sb.statsOf()
		if !of.rec.exists() {
			continue
		}
		counts[key{of.rec.Status, of.rec.Image}]++
		if of.rec.Status != api.StatusRunning && of.rec.Status != api.StatusPaused {
			continue
		}
		st := r.readStats(of, how)
		labels := []string{st.ID, st.Image}
		gauge := func(d *prometheus.Desc, v uint64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), labels...)
		}
		counter := func(d *prometheus.Desc, v uint64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
		}
		ch <- prometheus.MustNewConstMetric(descCPU, prometheus.CounterValue, st.CPUSeconds, labels...)
		gauge(descMemory, st.MemoryBytes)
		gauge(descMemoryLimit, st.MemoryLimitBytes)
		gauge(descPids, st.Pids)
		counter(descOOM, st.OOMKills)
		if of.rec.Limits.DiskMB > 0 {
			gauge(descDisk, st.DiskUsedBytes)
		}
		counter(descRxBytes, st.Network.RxBytes)
		counter(descTxBytes, st.Network.TxBytes)
		counter(descRxPackets, st.Network.RxPackets)
		counter(descTxPackets, st.Network.TxPackets)
	}
	for k, n := range counts {
		ch <- prometheus.MustNewConstMetric(descSandboxes, prometheus.GaugeValue, float64(n), k.status, k.image)
	}
	for image := range r.cfg.WarmPool {
		ch <- prometheus.MustNewConstMetric(descPoolReady, prometheus.GaugeValue, float64(r.pool.readyCount(image)), image)
		ch <- prometheus.MustNewConstMetric(descPoolTarget, prometheus.GaugeValue, float64(r.pool.target(image)), image)
	}
	if n, err := r.net.RuleCount(); err == nil {
		ch <- prometheus.MustNewConstMetric(descNFTRules, prometheus.GaugeValue, float64(n))
	} else {
		ch <- prometheus.NewInvalidMetric(descNFTRules, err)
	}
	if n, err := sandboxnet.ConntrackCount(); err == nil {
		ch <- prometheus.MustNewConstMetric(descConntrack, prometheus.GaugeValue, float64(n))
	}
}

func (r *Runtime) handleMetrics(w http.ResponseWriter, req *http.Request) error {
	r.ops.metrics.serve.ServeHTTP(w, req)
	return nil
}

// MetricsHandler serves the daemon's metrics, for a listener of their own (--metrics-listen).
func (r *Runtime) MetricsHandler() http.Handler { return r.ops.metrics.serve }
