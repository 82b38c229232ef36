package deploy

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
	"sigs.k8s.io/yaml"
)

const composeFile = "compose/compose.yaml"

// loadCompose loads a compose file as `docker compose config` does,
// validating it against the Compose specification's schema.
func loadCompose(t *testing.T, file string) (*types.Project, error) {
	t.Helper()
	abs, err := filepath.Abs(file)
	if err != nil {
		t.Fatal(err)
	}
	return loader.LoadWithContext(context.Background(), types.ConfigDetails{
		WorkingDir:  filepath.Dir(abs),
		ConfigFiles: []types.ConfigFile{{Filename: abs}},
		Environment: types.Mapping{},
	}, func(o *loader.Options) { o.SetProjectName("casare", true) })
}

func TestComposeFile(t *testing.T) {
	p, err := loadCompose(t, composeFile)
	if err != nil {
		t.Fatal(err)
	}
	service := func(name string) types.ServiceConfig {
		t.Helper()
		s, ok := p.Services[name]
		if !ok {
			t.Fatalf("compose has no service %s", name)
		}
		return s
	}
	// What runs for good has a healthcheck of its own; what runs once
	// (tokens, CA, migration) is waited for until it completed.
	oneShot := map[string]bool{"secrets": true, "ca": true, "migrate": true, "enroll-tokens": true}
	for name, s := range p.Services {
		if oneShot[name] {
			if s.Restart != "" && s.Restart != "no" {
				t.Errorf("one-shot %s restarts (%s)", name, s.Restart)
			}
			continue
		}
		if s.HealthCheck == nil || s.HealthCheck.Disable || len(s.HealthCheck.Test) == 0 {
			t.Errorf("service %s has no healthcheck", name)
		}
		for dep, d := range s.DependsOn {
			want := types.ServiceConditionHealthy
			if oneShot[dep] {
				want = types.ServiceConditionCompletedSuccessfully
			}
			if d.Condition != want {
				t.Errorf("%s waits for %s to be %q, want %q", name, dep, d.Condition, want)
			}
		}
	}
	wants := map[string][]string{
		"migrate":       {"postgres"},
		"server-1":      {"migrate", "ca", "redis"},
		"server-2":      {"migrate", "ca", "redis"},
		"enroll-tokens": {"server-1"},
		"agent-1":       {"enroll-tokens", "server-1", "server-2"},
		"agent-2":       {"enroll-tokens", "server-1", "server-2"},
		"prometheus":    {"server-1", "server-2"},
		"grafana":       {"prometheus"},
	}
	for name, deps := range wants {
		for _, dep := range deps {
			if _, ok := service(name).DependsOn[dep]; !ok {
				t.Errorf("%s does not wait for %s", name, dep)
			}
		}
	}

	// Both replicas share the database, Redis, CA, admin token and reset
	// key, and each tells robots its own address.
	var servers []string
	for _, name := range []string{"server-1", "server-2"} {
		s := service(name)
		servers = append(servers, name)
		env := map[string]string{}
		var names []string
		for k, v := range s.Environment {
			if v != nil {
				env[k] = *v
			}
			names = append(names, k)
		}
		checkEnv(t, "compose "+name, "casare-server", names)
		for _, k := range []string{"CASARE_DATABASE_URL", "CASARE_REDIS_URL", "CASARE_CA_CERT", "CASARE_CA_KEY", "CASARE_ADMIN_TOKEN_FILE", "CASARE_QUIC_RESET_KEY_FILE"} {
			if env[k] == "" || env[k] != *service("server-1").Environment[k] {
				t.Errorf("%s: %s is %q, want the value server-1 has too", name, k, env[k])
			}
		}
		if env["CASARE_QUIC_ADVERTISE"] != name+":8443" {
			t.Errorf("%s advertises %q to robots, want %s:8443", name, env["CASARE_QUIC_ADVERTISE"], name)
		}
	}
	checkFlags(t, "compose ca", "casare-server ca init", service("ca").Command)
	checkFlags(t, "compose migrate", "casare-server migrate", service("migrate").Command)
	for _, name := range []string{"agent-1", "agent-2"} {
		cmd := service(name).Command
		if len(cmd) == 0 || cmd[0] != "run" || !slices.Contains(cmd, "--enroll-token-file") {
			t.Errorf("%s runs %q, want run --enroll-token-file …", name, cmd)
		}
		checkFlags(t, "compose "+name, "casare-agent run", cmd)
	}
	if script := strings.Join(service("enroll-tokens").Command, " "); !strings.Contains(script, "robots token create") {
		t.Errorf("enroll-tokens does not create enrolment tokens: %s", script)
	}

	// Prometheus scrapes every replica.
	b, err := os.ReadFile("compose/prometheus.yml")
	if err != nil {
		t.Fatal(err)
	}
	var prom struct {
		RuleFiles     []string `json:"rule_files"`
		ScrapeConfigs []struct {
			StaticConfigs []struct {
				Targets []string `json:"targets"`
			} `json:"static_configs"`
		} `json:"scrape_configs"`
	}
	if err := yaml.Unmarshal(b, &prom); err != nil {
		t.Fatal(err)
	}
	var targets []string
	for _, sc := range prom.ScrapeConfigs {
		for _, st := range sc.StaticConfigs {
			targets = append(targets, st.Targets...)
		}
	}
	for _, s := range servers {
		if !slices.Contains(targets, s+":8080") {
			t.Errorf("Prometheus does not scrape %s:8080 (targets %v)", s, targets)
		}
	}
	// And loads the alerts of deploy/prometheus, mounted from the repository.
	promMounts := map[string]string{}
	for _, v := range service("prometheus").Volumes {
		if v.Type == types.VolumeTypeBind {
			promMounts[v.Target] = v.Source
		}
	}
	if len(prom.RuleFiles) == 0 {
		t.Error("Prometheus loads no rule files; want deploy/prometheus/alerts.yml")
	}
	for _, f := range prom.RuleFiles {
		src := promMounts[f]
		if src == "" {
			t.Errorf("Prometheus loads %s, which compose does not mount (mounts %v)", f, promMounts)
			continue
		}
		if _, err := os.Stat(src); err != nil {
			t.Errorf("Prometheus's %s is mounted from %s: %v", f, src, err)
		}
	}

	// Grafana gets its datasource and the dashboards of deploy/grafana.
	mounts := map[string]string{}
	for _, v := range service("grafana").Volumes {
		if v.Type == types.VolumeTypeBind {
			mounts[v.Target] = v.Source
		}
	}
	prov, dashboards := mounts["/etc/grafana/provisioning"], mounts["/var/lib/grafana/dashboards"]
	if prov == "" || dashboards == "" {
		t.Fatalf("grafana mounts %v, want the provisioning and the dashboards", mounts)
	}
	if rel, _ := filepath.Rel(filepath.Dir(must(filepath.Abs(composeFile))), dashboards); rel != filepath.Join("..", "grafana") {
		t.Errorf("dashboards come from %s, want deploy/grafana", dashboards)
	}
	var ds struct {
		Datasources []struct {
			Type string `json:"type"`
			URL  string `json:"url"`
		} `json:"datasources"`
	}
	readYAML(t, filepath.Join(prov, "datasources", "prometheus.yaml"), &ds)
	if len(ds.Datasources) != 1 || ds.Datasources[0].Type != "prometheus" || ds.Datasources[0].URL != "http://prometheus:9090" {
		t.Errorf("grafana datasources %+v, want the compose Prometheus", ds.Datasources)
	}
	var dp struct {
		Providers []struct {
			Options struct {
				Path string `json:"path"`
			} `json:"options"`
		} `json:"providers"`
	}
	readYAML(t, filepath.Join(prov, "dashboards", "casare.yaml"), &dp)
	if len(dp.Providers) != 1 || dp.Providers[0].Options.Path != "/var/lib/grafana/dashboards" {
		t.Errorf("grafana dashboard providers %+v, want one reading /var/lib/grafana/dashboards", dp.Providers)
	}
	for target, source := range mounts {
		if source == dashboards {
			continue // deploy/grafana is written beside this file by its own change
		}
		if _, err := os.Stat(source); err != nil {
			t.Errorf("grafana mounts %s at %s: %v", source, target, err)
		}
	}
}

// TestComposeValidationCatchesMisspeltKeys shows the load refuses what
// docker compose would.
func TestComposeValidationCatchesMisspeltKeys(t *testing.T) {
	b, err := os.ReadFile(composeFile)
	if err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(t.TempDir(), "compose.yaml")
	if err := os.WriteFile(bad, []byte(strings.Replace(string(b), "    healthcheck:\n      test: [\"CMD\", \"pg_isready\"", "    healthcheck:\n      tset: [\"CMD\", \"pg_isready\"", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := loadCompose(t, bad); err == nil || !strings.Contains(err.Error(), "tset") {
		t.Errorf("a misspelt healthcheck key: %v, want an error naming it", err)
	}
}

func readYAML(t *testing.T, path string, out any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, out); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
