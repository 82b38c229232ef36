package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect/v2"
	"connectrpc.com/connect/v2/connecthttp"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/types/known/durationpb"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
	"github.com/casarerpa/casare/rpc/casare/v1/casarev1connect"
)

// The deploy files are checked here, beside the binaries whose metrics they
// name: Prometheus's own promtool parses every expression and runs the rule
// tests, and a live casare-server says which metrics exist.
const (
	grafanaDir    = "../../deploy/grafana"
	prometheusDir = "../../deploy/prometheus"
)

// promtool finds Debian's promtool (package prometheus), which .ci/run
// installs. Without it the checks cannot run, and pretending they passed
// would be worse than failing.
func promtool(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool not found: install it with `apt-get install prometheus` (.ci/run does); the alert rules and dashboards cannot be checked without it")
	}
	return path
}

func runPromtool(t *testing.T, dir string, args ...string) {
	t.Helper()
	cmd := exec.Command(promtool(t), args...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func TestAlertRulesPassPromtool(t *testing.T) {
	t.Parallel()
	runPromtool(t, prometheusDir, "check", "rules", "alerts.yml")
	runPromtool(t, prometheusDir, "test", "rules", "alerts_test.yml")
	runPromtool(t, prometheusDir, "check", "config", "prometheus.yml")
}

// dashboard is the part of a Grafana dashboard the checks read.
type dashboard struct {
	UID        string `json:"uid"`
	Title      string `json:"title"`
	Templating struct {
		List []struct {
			Name  string `json:"name"`
			Type  string `json:"type"`
			Query any    `json:"query"`
		} `json:"list"`
	} `json:"templating"`
	Panels []panel `json:"panels"`
}

type panel struct {
	Title      string     `json:"title"`
	Datasource datasource `json:"datasource"`
	Targets    []struct {
		Expr       string     `json:"expr"`
		Datasource datasource `json:"datasource"`
	} `json:"targets"`
	// Rows hold panels of their own.
	Panels []panel `json:"panels"`
}

type datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

// query is one PromQL expression and where it came from.
type query struct{ where, expr string }

// grafanaVars stand in for the variables Grafana fills in, so that
// promtool can parse what Prometheus will be sent.
var grafanaVars = map[string]string{
	"__rate_interval": "5m",
	"__interval":      "1m",
	"__range":         "1h",
}

var grafanaVar = regexp.MustCompile(`\$\{?(\w+)\}?`)

// dashboardQueries reads every dashboard, checks what must hold for it to
// import anywhere, and returns its expressions with the variables filled.
func dashboardQueries(t *testing.T) []query {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(grafanaDir, "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"hybrid-dashboard.json", "fleet.json", "jobs.json", "queue.json", "api.json", "control-plane.json"} {
		if !slices.Contains(files, filepath.Join(grafanaDir, want)) {
			t.Errorf("deploy/grafana/%s is missing", want)
		}
	}
	uids := map[string]string{}
	var out []query
	for _, file := range files {
		name := filepath.Base(file)
		raw, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		var d dashboard
		if err := json.Unmarshal(raw, &d); err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if d.UID == "" || d.Title == "" {
			t.Errorf("%s: needs a uid and a title", name)
		}
		if other, ok := uids[d.UID]; ok {
			t.Errorf("%s: uid %q is also %s's", name, d.UID, other)
		}
		uids[d.UID] = name
		vars := map[string]bool{}
		for _, v := range d.Templating.List {
			vars[v.Name] = true
			if v.Name == "datasource" && (v.Type != "datasource" || v.Query != "prometheus") {
				t.Errorf("%s: the datasource variable must be of type datasource and query prometheus", name)
			}
		}
		if !vars["datasource"] {
			t.Errorf("%s: no datasource variable; the dashboard would import only where a data source has our uid", name)
		}
		var walk func(ps []panel)
		walk = func(ps []panel) {
			for _, p := range ps {
				walk(p.Panels)
				where := name + ": " + p.Title
				if len(p.Targets) > 0 && p.Datasource.UID != "${datasource}" {
					t.Errorf("%s: datasource %q, want ${datasource}", where, p.Datasource.UID)
				}
				for _, target := range p.Targets {
					if target.Datasource.UID != "" && target.Datasource.UID != "${datasource}" {
						t.Errorf("%s: a target's datasource %q, want ${datasource}", where, target.Datasource.UID)
					}
					expr := grafanaVar.ReplaceAllStringFunc(target.Expr, func(m string) string {
						v := grafanaVar.FindStringSubmatch(m)[1]
						if s, ok := grafanaVars[v]; ok {
							return s
						}
						if !vars[v] {
							t.Errorf("%s: $%s is not a variable of the dashboard", where, v)
						}
						return ".*"
					})
					out = append(out, query{where, expr})
				}
			}
		}
		walk(d.Panels)
	}
	return out
}

// ruleQueries returns the expressions of the alert rules.
func ruleQueries(t *testing.T) []query {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(prometheusDir, "alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Groups []struct {
			Rules []struct {
				Alert string `yaml:"alert"`
				Expr  string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(raw, &file); err != nil {
		t.Fatalf("alerts.yml: %v", err)
	}
	var out []query
	for _, g := range file.Groups {
		for _, r := range g.Rules {
			out = append(out, query{"alerts.yml: " + r.Alert, r.Expr})
		}
	}
	return out
}

// checkParse has promtool parse every expression, as recording rules of a
// file of their own.
func checkParse(t *testing.T, queries []query) {
	t.Helper()
	type rule struct {
		Record string `yaml:"record"`
		Expr   string `yaml:"expr"`
	}
	var rules []rule
	for i, q := range queries {
		rules = append(rules, rule{fmt.Sprintf("dashboard:query_%d", i), q.expr})
	}
	raw, err := yaml.Marshal(map[string]any{"groups": []any{map[string]any{"name": "dashboards", "rules": rules}}})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "dashboards.yml"), raw, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(promtool(t), "check", "rules", "dashboards.yml")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		// Name the panels of the rules promtool points at.
		for i, q := range queries {
			if strings.Contains(string(out), fmt.Sprintf("%q", fmt.Sprintf("dashboard:query_%d", i))) {
				t.Logf("query %d is %s: %s", i, q.where, q.expr)
			}
		}
		t.Fatalf("promtool check rules on the dashboards' queries: %v\n%s", err, out)
	}
}

var (
	promString  = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
	promMatcher = regexp.MustCompile(`\{[^}]*\}`)
	promGroup   = regexp.MustCompile(`\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	promRange   = regexp.MustCompile(`\[[^\]]*\]`)
	promIdent   = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`)
	promWords   = map[string]bool{"and": true, "or": true, "unless": true, "bool": true, "offset": true,
		"group_left": true, "group_right": true, "inf": true, "nan": true, "Inf": true, "NaN": true}
)

// metricNames returns the metric names an expression selects: what is left
// once strings, label matchers, grouping labels, ranges, functions and
// keywords are taken out.
func metricNames(expr string) []string {
	expr = promString.ReplaceAllString(expr, `""`)
	expr = promMatcher.ReplaceAllString(expr, " ")
	expr = promGroup.ReplaceAllString(expr, " ")
	expr = promRange.ReplaceAllString(expr, " ")
	var names []string
	for _, loc := range promIdent.FindAllStringIndex(expr, -1) {
		word := expr[loc[0]:loc[1]]
		if loc[0] > 0 && strings.ContainsAny(expr[loc[0]-1:loc[0]], "0123456789.") {
			continue // the exponent of a number: 1e3
		}
		if promWords[word] || strings.HasPrefix(strings.TrimLeft(expr[loc[1]:], " \t\n"), "(") {
			continue
		}
		names = append(names, word)
	}
	return names
}

func TestMetricNames(t *testing.T) {
	t.Parallel()
	got := metricNames(`sum by (status) (rate(casare_x_total{a="b",c=~"d|e"}[5m])) / on (robot_id) group_left (name) max by (robot_id, name) (casare_robot_info) > 1e3 and up == 0 or vector(0)`)
	if want := []string{"casare_x_total", "casare_robot_info", "up"}; !slices.Equal(got, want) {
		t.Errorf("metricNames = %v, want %v", got, want)
	}
}

// exportedSeries scrapes a server and returns the names of the series its
// /metrics can hold: a histogram's _bucket, _sum and _count, a summary's
// _sum and _count besides its own name.
func exportedSeries(t *testing.T, s *serverProc) map[string]bool {
	t.Helper()
	res, err := http.Get(s.url() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	names := map[string]bool{}
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 4 || f[0] != "#" || f[1] != "TYPE" {
			continue
		}
		names[f[2]] = true
		switch f[3] {
		case "histogram":
			names[f[2]+"_bucket"], names[f[2]+"_sum"], names[f[2]+"_count"] = true, true, true
		case "summary":
			names[f[2]+"_sum"], names[f[2]+"_count"] = true, true
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	return names
}

func TestDashboardsAndAlertsNameOnlyMetricsTheServerExports(t *testing.T) {
	t.Parallel()
	queries := append(dashboardQueries(t), ruleQueries(t)...)
	checkParse(t, queries)

	// A server with a robot that ran a job that succeeded and one that
	// failed, so the metrics that appear only once something happened
	// (counters by robot and workflow, API calls, rows pruned) are there too.
	// Retention on, so its counter is there after the first pass; a robot
	// pool, so its metrics are there.
	s := startServer(t, t.TempDir(), "--heartbeat-interval", "200ms", "--retain-jobs", "30d", "--robot-pool", "cloud=labels=pool=cloud")
	f := newFleet(t, s)
	f.enrol("metrics")
	waitStatuses(t, s, map[string]string{"metrics": "IDLE"}, 15*time.Second)
	ok := f.submit(sleeper("1ms"))
	bad := f.submit(workflow("broken", step("boom", "fail", map[string]any{"message": "on purpose"})))
	f.wait(ok.GetId(), casarev1.JobStatus_JOB_STATUS_SUCCEEDED, 20*time.Second)
	f.wait(bad.GetId(), casarev1.JobStatus_JOB_STATUS_FAILED, 20*time.Second)
	// A work queue whose trigger starts a job that processes its item, so
	// the work-queue metrics are there too.
	triggeredItem(t, s)

	var exported map[string]bool
	deadline := time.Now().Add(15 * time.Second)
	for {
		exported = exportedSeries(t, s)
		if exported["casare_robot_jobs_total"] && exported["casare_jobs_finished_total"] && exported["casare_retention_pruned_rows_total"] &&
			exported["casare_workqueue_item_duration_seconds"] && exported["casare_workqueue_trigger_jobs_total"] || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	// up is written by Prometheus for every target it scrapes.
	exported["up"] = true
	used := map[string]bool{}
	for _, q := range queries {
		for _, name := range metricNames(q.expr) {
			used[name] = true
			if !exported[name] {
				t.Errorf("%s names %s, which casare-server does not export", q.where, name)
			}
		}
	}
	// Every metric of our own is shown or alerted on somewhere.
	for name := range exported {
		base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_sum"), "_count")
		if strings.HasPrefix(name, "casare_") && exported[base] && !used[name] && !used[base+"_bucket"] && !used[base+"_sum"] && !used[base+"_count"] && !used[base] {
			t.Errorf("no dashboard or alert shows %s", name)
		}
	}
}

// triggeredItem creates a queue with a trigger, adds an item and waits
// until the job the trigger starts has completed it.
func triggeredItem(t *testing.T, s *serverProc) {
	t.Helper()
	ctx := context.Background()
	conn := connect.NewClient(connecthttp.NewTransport(http1, s.url()), bearer(s.adminToken()))
	queues := casarev1connect.NewWorkQueueServiceClient(conn)
	workflows := casarev1connect.NewWorkflowServiceClient(conn)
	if _, err := queues.CreateWorkQueue(ctx, &casarev1.CreateWorkQueueRequest{Queue: &casarev1.WorkQueue{Name: "metrics", Sla: durationpb.New(time.Hour)}}); err != nil {
		t.Fatal(err)
	}
	drain := workflow("drain-metrics", step("each", "queue.process", map[string]any{"queue": "metrics"}))
	drain.Steps[0].Steps = []*casarev1.Step{step("note", "log", map[string]any{"message": "item ${{ item.reference }}"})}
	if _, err := workflows.PutWorkflow(ctx, &casarev1.PutWorkflowRequest{Workflow: drain}); err != nil {
		t.Fatal(err)
	}
	if _, err := queues.UpdateWorkQueue(ctx, &casarev1.UpdateWorkQueueRequest{Queue: &casarev1.WorkQueue{Name: "metrics", Sla: durationpb.New(time.Hour),
		Trigger: &casarev1.QueueTrigger{WorkflowName: "drain-metrics", Enabled: true}}}); err != nil {
		t.Fatal(err)
	}
	q := queueClient{t, queues}
	q.add("metrics", item("m-1", map[string]any{"n": 1}))
	deadline := time.Now().Add(30 * time.Second)
	for q.stats("metrics").GetCounts()["SUCCESSFUL"] != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("the trigger's job did not complete the item within 30s:\n%s", statusesText(q.items("metrics")))
		}
		time.Sleep(100 * time.Millisecond)
	}
}
