package deploy

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	kedav1alpha1 "github.com/kedacore/keda/v2/apis/keda/v1alpha1"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/lint"
	"helm.sh/helm/v3/pkg/lint/support"
	"helm.sh/helm/v3/pkg/releaseutil"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"
)

const (
	chartDir  = "helm/casare"
	release   = "casare"
	namespace = "rpa"
)

// The value sets the chart is rendered with, in helm/casare/ci.
var valueSets = []string{"default", "keda", "hpa", "existing-secrets"}

// object is one rendered manifest, decoded into its API type.
type object struct {
	kind, name string
	hook       string // helm.sh/hook, for hooks
	obj        any
}

// rendered is what the chart makes of one value set.
type rendered struct {
	objects []object
	notes   string
}

func (r rendered) all(kind string) []object {
	var out []object
	for _, o := range r.objects {
		if o.kind == kind {
			out = append(out, o)
		}
	}
	return out
}

func (r rendered) get(t *testing.T, kind, name string) any {
	t.Helper()
	for _, o := range r.objects {
		if o.kind == kind && o.name == name {
			return o.obj
		}
	}
	t.Fatalf("no %s %q rendered", kind, name)
	return nil
}

// newObject maps the kinds the chart may render to their API types. A
// kind not here fails the test: it would not have been checked.
func newObject(apiVersion, kind string) (any, error) {
	switch apiVersion + " " + kind {
	case "v1 Secret":
		return new(corev1.Secret), nil
	case "v1 Service":
		return new(corev1.Service), nil
	case "v1 ServiceAccount":
		return new(corev1.ServiceAccount), nil
	case "apps/v1 Deployment":
		return new(appsv1.Deployment), nil
	case "policy/v1 PodDisruptionBudget":
		return new(policyv1.PodDisruptionBudget), nil
	case "batch/v1 Job":
		return new(batchv1.Job), nil
	case "autoscaling/v2 HorizontalPodAutoscaler":
		return new(autoscalingv2.HorizontalPodAutoscaler), nil
	case "keda.sh/v1alpha1 ScaledObject":
		return new(kedav1alpha1.ScaledObject), nil
	case "monitoring.coreos.com/v1 ServiceMonitor":
		return new(monitoringv1.ServiceMonitor), nil
	}
	return nil, fmt.Errorf("%s %s: no API type to check it against", apiVersion, kind)
}

// decodeStrict decodes one manifest into its API type, refusing unknown
// and duplicate fields, so a misspelt or misplaced field fails.
func decodeStrict(doc string) (object, error) {
	var meta struct {
		metav1.TypeMeta `json:",inline"`
		Metadata        metav1.ObjectMeta `json:"metadata"`
	}
	if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
		return object{}, err
	}
	obj, err := newObject(meta.APIVersion, meta.Kind)
	if err != nil {
		return object{}, err
	}
	if err := yaml.UnmarshalStrict([]byte(doc), obj); err != nil {
		return object{}, fmt.Errorf("%s %s: %w", meta.Kind, meta.Metadata.Name, err)
	}
	return object{kind: meta.Kind, name: meta.Metadata.Name, hook: meta.Metadata.Annotations["helm.sh/hook"], obj: obj}, nil
}

func loadChart(t *testing.T) *chart.Chart {
	t.Helper()
	c, err := loader.Load(chartDir)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func readValues(t *testing.T, set string) map[string]any {
	t.Helper()
	v, err := chartutil.ReadValuesFile(filepath.Join(chartDir, "ci", set+"-values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// renderChart is `helm template` through Helm's SDK: an install in dry-run,
// client-only mode, with the chart's schema checked on the way.
func renderChart(t *testing.T, vals map[string]any) (rendered, error) {
	t.Helper()
	install := action.NewInstall(&action.Configuration{Log: func(string, ...any) {}})
	install.DryRun = true
	install.ClientOnly = true
	install.Replace = true
	install.ReleaseName = release
	install.Namespace = namespace
	kube, err := chartutil.ParseKubeVersion("v1.31.0")
	if err != nil {
		t.Fatal(err)
	}
	install.KubeVersion = kube
	rel, err := install.Run(loadChart(t), vals)
	if err != nil {
		return rendered{}, err
	}
	docs := releaseutil.SplitManifests(rel.Manifest)
	for _, h := range rel.Hooks {
		docs[h.Path+"#"+h.Kind+"#"+h.Name] = h.Manifest
	}
	var out rendered
	keys := make([]string, 0, len(docs))
	for k := range docs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if strings.TrimSpace(docs[k]) == "" {
			continue
		}
		o, err := decodeStrict(docs[k])
		if err != nil {
			t.Errorf("%s\n%s", err, docs[k])
			continue
		}
		out.objects = append(out.objects, o)
	}
	out.notes = rel.Info.Notes
	return out, nil
}

func TestChartLints(t *testing.T) {
	for _, set := range valueSets {
		t.Run(set, func(t *testing.T) {
			kube, _ := chartutil.ParseKubeVersion("v1.31.0")
			result := lint.AllWithKubeVersion(chartDir, readValues(t, set), namespace, kube)
			for _, m := range result.Messages {
				// As `helm lint --strict`: warnings count.
				if m.Severity >= support.WarningSev {
					t.Errorf("helm lint: %s", m)
				}
			}
		})
	}
}

func TestChartRendersValidObjects(t *testing.T) {
	for _, set := range valueSets {
		t.Run(set, func(t *testing.T) {
			r, err := renderChart(t, readValues(t, set))
			if err != nil {
				t.Fatal(err)
			}
			checkServer(t, r)
			checkSecretRefs(t, r, set)
			checkPodSpecs(t, set, r)
			if !strings.Contains(r.notes, "CASARE_TOKEN") && !strings.Contains(r.notes, "get secret") {
				t.Errorf("NOTES.txt does not say how to get the admin token:\n%s", r.notes)
			}
		})
	}
}

// checkServer: the control plane as the issue asks for it, in every set.
func checkServer(t *testing.T, r rendered) {
	t.Helper()
	d := r.get(t, "Deployment", release).(*appsv1.Deployment)
	if d.Spec.Replicas == nil || *d.Spec.Replicas < 2 {
		t.Errorf("server replicas %v, want 2 or more", d.Spec.Replicas)
	}
	pod := d.Spec.Template.Spec
	c := pod.Containers[0]
	if p := c.ReadinessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/health/ready" {
		t.Errorf("readiness probe %+v, want GET /health/ready", p)
	}
	if p := c.LivenessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/health/live" {
		t.Errorf("liveness probe %+v, want GET /health/live", p)
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Errorf("server resources %+v: want CPU and memory requests and a memory limit", c.Resources)
	}
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
		t.Errorf("the Deployment's selector %v does not match its pods %v", d.Spec.Selector, d.Spec.Template.Labels)
	}

	for _, o := range r.all("PodDisruptionBudget") {
		pdb := o.obj.(*policyv1.PodDisruptionBudget)
		sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
		if err != nil || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
			t.Errorf("PodDisruptionBudget %s selects none of the server's pods", o.name)
		}
		if pdb.Spec.MinAvailable == nil || pdb.Spec.MinAvailable.IntValue() >= int(*d.Spec.Replicas) {
			t.Errorf("PodDisruptionBudget minAvailable %v leaves no replica to disrupt", pdb.Spec.MinAvailable)
		}
	}

	httpSvc := r.get(t, "Service", release).(*corev1.Service)
	tunnel := r.get(t, "Service", release+"-tunnel").(*corev1.Service)
	for _, s := range []*corev1.Service{httpSvc, tunnel} {
		if !labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(d.Spec.Template.Labels)) {
			t.Errorf("Service %s selects none of the server's pods", s.Name)
		}
	}
	if p := httpSvc.Spec.Ports; len(p) != 1 || p[0].Protocol != corev1.ProtocolTCP || p[0].TargetPort.String() != "http" {
		t.Errorf("HTTP Service ports %+v, want one TCP port to http", p)
	}
	if p := tunnel.Spec.Ports; len(p) != 1 || p[0].Protocol != corev1.ProtocolUDP || p[0].TargetPort.String() != "tunnel" {
		t.Errorf("tunnel Service ports %+v, want one UDP port to tunnel", p)
	}
	if tunnel.Spec.Type != corev1.ServiceTypeLoadBalancer && tunnel.Spec.Type != corev1.ServiceTypeNodePort {
		t.Errorf("tunnel Service type %s, want LoadBalancer or NodePort", tunnel.Spec.Type)
	}
	ports := map[string]corev1.Protocol{}
	for _, p := range c.Ports {
		ports[p.Name] = p.Protocol
	}
	if ports["http"] != corev1.ProtocolTCP || ports["tunnel"] != corev1.ProtocolUDP {
		t.Errorf("server container ports %v, want http/TCP and tunnel/UDP", ports)
	}

	job := r.get(t, "Job", release+"-migrate").(*batchv1.Job)
	if hook := job.Annotations["helm.sh/hook"]; hook != "pre-install,pre-upgrade" {
		t.Errorf("migration Job hook %q, want pre-install,pre-upgrade", hook)
	}
	if args := job.Spec.Template.Spec.Containers[0].Args; !slices.Equal(args, []string{"migrate"}) {
		t.Errorf("migration Job args %q, want [migrate]", args)
	}
}

// checkSecretRefs: every Secret a pod reads is one the chart renders (with
// the key it reads), or one the values name as existing. A hook reads only
// Secrets that exist before it: hooks of its own of a lower weight.
func checkSecretRefs(t *testing.T, r rendered, set string) {
	t.Helper()
	type secret struct {
		keys map[string]bool
		hook bool
	}
	secrets := map[string]secret{}
	for _, o := range r.all("Secret") {
		s := o.obj.(*corev1.Secret)
		keys := map[string]bool{}
		for k := range s.Data {
			keys[k] = true
		}
		for k := range s.StringData {
			keys[k] = true
		}
		secrets[o.name] = secret{keys, o.hook != ""}
	}
	existing := map[string]bool{}
	if set == "existing-secrets" {
		for _, n := range []string{"casare-db", "casare-redis", "casare-ca", "casare-admin", "casare-quic", "casare-vault", "casare-pool"} {
			existing[n] = true
		}
	}
	check := func(who string, isHook bool, name, key string) {
		if existing[name] {
			return
		}
		s, ok := secrets[name]
		switch {
		case !ok:
			t.Errorf("%s reads Secret %s, which is neither rendered nor named as existing", who, name)
		case key != "" && !s.keys[key]:
			t.Errorf("%s reads key %s of Secret %s, which has %v", who, key, name, s.keys)
		case isHook && !s.hook:
			t.Errorf("hook %s reads Secret %s, which is made only after the hooks ran", who, name)
		}
	}
	for _, o := range r.objects {
		spec, isHook := podSpec(o)
		if spec == nil {
			continue
		}
		who := o.kind + " " + o.name
		for _, c := range slices.Concat(spec.InitContainers, spec.Containers) {
			for _, e := range c.Env {
				if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
					check(who, isHook, e.ValueFrom.SecretKeyRef.Name, e.ValueFrom.SecretKeyRef.Key)
				}
			}
		}
		for _, v := range spec.Volumes {
			if v.Secret == nil {
				continue
			}
			for _, item := range v.Secret.Items {
				check(who, isHook, v.Secret.SecretName, item.Key)
			}
		}
	}
}

func podSpec(o object) (*corev1.PodSpec, bool) {
	switch v := o.obj.(type) {
	case *appsv1.Deployment:
		return &v.Spec.Template.Spec, false
	case *batchv1.Job:
		return &v.Spec.Template.Spec, o.hook != ""
	}
	return nil, false
}

// checkPodSpecs: every container is non-root on a read-only root with no
// capabilities, and passes only flags and variables its binary knows.
func checkPodSpecs(t *testing.T, set string, r rendered) {
	t.Helper()
	for _, o := range r.objects {
		spec, _ := podSpec(o)
		if spec == nil {
			continue
		}
		if spec.SecurityContext == nil || spec.SecurityContext.RunAsNonRoot == nil || !*spec.SecurityContext.RunAsNonRoot ||
			spec.SecurityContext.RunAsUser == nil || *spec.SecurityContext.RunAsUser == 0 {
			t.Errorf("%s %s: the pod does not run as a non-root user", o.kind, o.name)
		}
		for _, c := range slices.Concat(spec.InitContainers, spec.Containers) {
			where := fmt.Sprintf("%s: %s %s container %s", set, o.kind, o.name, c.Name)
			sc := c.SecurityContext
			if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
				sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
				sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
				t.Errorf("%s: security context %+v, want a read-only root, no privilege escalation, every capability dropped", where, sc)
			}
			var env []string
			for _, e := range c.Env {
				env = append(env, e.Name)
			}
			switch {
			case strings.Contains(c.Image, "casare-server"):
				checkEnv(t, where, "casare-server", env)
				command := "casare-server"
				if len(c.Args) > 0 && !strings.HasPrefix(c.Args[0], "-") {
					command += " " + c.Args[0]
				}
				checkFlags(t, where, command, c.Args)
			case len(c.Args) > 0 && c.Args[0] == "run":
				checkFlags(t, where, "casare-agent run", c.Args)
			case strings.Contains(strings.Join(c.Args, " "), "casarectl "):
				checkEnv(t, where, "casarectl", env)
			default:
				t.Errorf("%s: a container the checks do not know", where)
			}
		}
	}
}

func TestChartRobotPoolWithKEDA(t *testing.T) {
	r, err := renderChart(t, readValues(t, "keda"))
	if err != nil {
		t.Fatal(err)
	}
	poolName := release + "-pool-cloud"
	pool := r.get(t, "Deployment", poolName).(*appsv1.Deployment)
	if pool.Spec.Replicas != nil {
		t.Errorf("the pool Deployment sets replicas %d; KEDA owns them", *pool.Spec.Replicas)
	}
	so := r.get(t, "ScaledObject", poolName).(*kedav1alpha1.ScaledObject)
	if so.Spec.ScaleTargetRef == nil || so.Spec.ScaleTargetRef.Name != poolName || so.Spec.ScaleTargetRef.Kind != "Deployment" {
		t.Errorf("ScaledObject targets %+v, want Deployment %s", so.Spec.ScaleTargetRef, poolName)
	}
	if so.Spec.MinReplicaCount == nil || *so.Spec.MinReplicaCount != 0 || so.Spec.MaxReplicaCount == nil || *so.Spec.MaxReplicaCount != 20 {
		t.Errorf("ScaledObject replicas %v to %v, want 0 to 20", so.Spec.MinReplicaCount, so.Spec.MaxReplicaCount)
	}
	if len(so.Spec.Triggers) != 1 {
		t.Fatalf("ScaledObject triggers %+v, want one", so.Spec.Triggers)
	}
	tr := so.Spec.Triggers[0]
	// One robot per 10 jobs the pool could run by default (DESIGN.md),
	// pending and running, over the 2 slots of each robot.
	wantQuery := `ceil(max(casare_pool_pending_jobs{environment="production",pool="cloud"}) / 10) + ceil(max(casare_pool_running_jobs{environment="production",pool="cloud"}) / 2)`
	if tr.Type != "prometheus" || tr.Metadata["threshold"] != "1" || tr.Metadata["query"] != wantQuery {
		t.Errorf("ScaledObject trigger %+v, want prometheus on %s with threshold 1 (the query counts robots)", tr, wantQuery)
	}
	// The server counts those jobs for the pool's robots: its labels, and
	// browser given and found in the image once.
	checkRobotPoolFlag(t, r.get(t, "Deployment", release).(*appsv1.Deployment), "--robot-pool=cloud=capabilities=browser;labels=pool=cloud+region=eu-west-1")
	if len(r.all("HorizontalPodAutoscaler")) != 0 {
		t.Error("an HPA is rendered beside the ScaledObject; they would fight over the replicas")
	}
	agent := pool.Spec.Template.Spec.Containers[0]
	if !slices.Contains(agent.Args, "--enroll-token-file=/enroll/token") || !slices.Contains(agent.Args, "--labels=pool=cloud,region=eu-west-1") {
		t.Errorf("pool agent args %q: want self-enrolment and the pool's labels", agent.Args)
	}
	// The drain timeout (10m) fits in the grace period.
	if g := pool.Spec.Template.Spec.TerminationGracePeriodSeconds; g == nil || *g <= 600 {
		t.Errorf("pool grace period %v, want more than the 10m drain timeout", g)
	}

	sm := r.get(t, "ServiceMonitor", release).(*monitoringv1.ServiceMonitor)
	httpSvc := r.get(t, "Service", release).(*corev1.Service)
	sel, err := metav1.LabelSelectorAsSelector(&sm.Spec.Selector)
	if err != nil || !sel.Matches(labels.Set(httpSvc.Labels)) {
		t.Errorf("ServiceMonitor selector %v does not select the HTTP Service %v", sm.Spec.Selector, httpSvc.Labels)
	}
	if tunnel := r.get(t, "Service", release+"-tunnel").(*corev1.Service); sel.Matches(labels.Set(tunnel.Labels)) {
		t.Error("ServiceMonitor selects the UDP tunnel Service too")
	}
	if len(sm.Spec.Endpoints) != 1 || sm.Spec.Endpoints[0].Port != "http" || sm.Spec.Endpoints[0].Path != "/metrics" {
		t.Errorf("ServiceMonitor endpoints %+v, want port http path /metrics", sm.Spec.Endpoints)
	}
	server := r.get(t, "Deployment", release).(*appsv1.Deployment)
	if v := envValue(server.Spec.Template.Spec.Containers[0], "CASARE_QUIC_ADVERTISE"); v != "robots.example.com:8443" {
		t.Errorf("CASARE_QUIC_ADVERTISE %q, want the advertised tunnel address", v)
	}
}

func TestChartRobotPoolWithHPA(t *testing.T) {
	r, err := renderChart(t, readValues(t, "hpa"))
	if err != nil {
		t.Fatal(err)
	}
	if len(r.all("ScaledObject")) != 0 {
		t.Error("a ScaledObject is rendered in hpa mode")
	}
	hpa := r.get(t, "HorizontalPodAutoscaler", release+"-pool-batch").(*autoscalingv2.HorizontalPodAutoscaler)
	if hpa.Spec.MinReplicas == nil || *hpa.Spec.MinReplicas != 1 || hpa.Spec.MaxReplicas != 5 {
		t.Errorf("HPA replicas %v to %d, want 1 (an HPA cannot go to 0) to 5", hpa.Spec.MinReplicas, hpa.Spec.MaxReplicas)
	}
	m := hpa.Spec.Metrics
	if len(m) != 1 || m[0].External == nil || m[0].External.Metric.Name != "casare_pool_pending_jobs" ||
		m[0].External.Target.AverageValue == nil || m[0].External.Target.AverageValue.String() != "4" {
		t.Errorf("HPA metrics %+v, want casare_pool_pending_jobs at 4 per robot", m)
	} else if sel := m[0].External.Metric.Selector; sel == nil || sel.MatchLabels["pool"] != "batch" {
		t.Errorf("HPA metric selector %+v, want the pool batch", sel)
	}
	// allowShell makes the pool's robots able to run jobs that need shell.
	checkRobotPoolFlag(t, r.get(t, "Deployment", release).(*appsv1.Deployment), "--robot-pool=batch=capabilities=browser+shell;labels=pool=batch")
	tunnel := r.get(t, "Service", release+"-tunnel").(*corev1.Service)
	if tunnel.Spec.Type != corev1.ServiceTypeNodePort || tunnel.Spec.Ports[0].NodePort != 30443 {
		t.Errorf("tunnel Service %s port %+v, want NodePort 30443", tunnel.Spec.Type, tunnel.Spec.Ports)
	}
	pool := r.get(t, "Deployment", release+"-pool-batch").(*appsv1.Deployment)
	if !slices.Contains(pool.Spec.Template.Spec.Containers[0].Args, "--allow-shell") {
		t.Errorf("pool args %q lack --allow-shell", pool.Spec.Template.Spec.Containers[0].Args)
	}
}

func TestChartExistingSecrets(t *testing.T) {
	r, err := renderChart(t, readValues(t, "existing-secrets"))
	if err != nil {
		t.Fatal(err)
	}
	if s := r.all("Secret"); len(s) != 0 {
		t.Errorf("rendered Secrets %v although every secret is named as existing", s)
	}
	pool := r.get(t, "Deployment", release+"-pool-cloud").(*appsv1.Deployment)
	if pool.Spec.Replicas == nil || *pool.Spec.Replicas != 3 {
		t.Errorf("pool replicas %v, want the fixed 3 of autoscaling none", pool.Spec.Replicas)
	}
	if len(r.all("ScaledObject"))+len(r.all("HorizontalPodAutoscaler"))+len(r.all("PodDisruptionBudget"))+len(r.all("ServiceAccount")) != 0 {
		t.Error("autoscaler, PodDisruptionBudget or ServiceAccount rendered although disabled")
	}
}

func TestChartGeneratesSecretsOnce(t *testing.T) {
	r, err := renderChart(t, readValues(t, "default"))
	if err != nil {
		t.Fatal(err)
	}
	tokens := r.get(t, "Secret", release+"-tokens").(*corev1.Secret)
	token := string(tokens.Data["admin-token"])
	if !strings.HasPrefix(token, "csr_") || len(token) != 4+43 {
		t.Errorf("generated admin token %d characters, want csr_ and 43 of base64url", len(token))
	}
	if key := tokens.Data["quic-reset-key"]; len(key) != 64 || strings.Trim(string(key), "0123456789abcdef") != "" {
		t.Errorf("generated QUIC reset key %q, want 64 hex digits", key)
	}
	if key, err := base64.StdEncoding.DecodeString(string(tokens.Data["secret-key"])); err != nil || len(key) != 32 {
		t.Errorf("generated vault key %q, want the base64 of 32 bytes (%v)", tokens.Data["secret-key"], err)
	}
	ca := r.get(t, "Secret", release+"-ca").(*corev1.Secret)
	if !bytes.HasPrefix(ca.Data["ca.crt"], []byte("-----BEGIN CERTIFICATE-----")) || !bytes.HasPrefix(ca.Data["ca.key"], []byte("-----BEGIN EC PRIVATE KEY-----")) {
		t.Errorf("generated CA is not a PEM certificate and EC key")
	}
	for _, s := range []*corev1.Secret{tokens, ca} {
		if s.Annotations["helm.sh/resource-policy"] != "keep" {
			t.Errorf("Secret %s would go with an uninstall; robots would lose their CA", s.Name)
		}
	}
}

func envValue(c corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

// TestChartRefusesBadValues: the schema and the chart's own checks refuse
// values that could not work, naming what is wrong.
func TestChartRefusesBadValues(t *testing.T) {
	tests := []struct {
		name string
		set  map[string]any
		want string
	}{
		{"ReplicaCountNotANumber", map[string]any{"replicaCount": "two"}, "replicaCount"},
		{"NoReplicas", map[string]any{"replicaCount": 0}, "replicaCount"},
		{"MisspeltKey", map[string]any{"replicas": 3}, "replicas"},
		{"TunnelType", map[string]any{"tunnel": map[string]any{"type": "Ingress"}}, "/tunnel/type"},
		{"AutoscalingMode", map[string]any{"robotPool": map[string]any{"autoscaling": map[string]any{"mode": "cron"}}}, "mode"},
		{"AdminToken", map[string]any{"adminToken": map[string]any{"value": "hunter2"}}, "/adminToken/value"},
		{"DatabaseURL", map[string]any{"database": map[string]any{"url": "mysql://db/casare"}}, "/database/url"},
		{"DrainTimeout", map[string]any{"robotPool": map[string]any{"drainTimeout": "5 minutes"}}, "drainTimeout"},
		{"NoDatabase", map[string]any{"database": map[string]any{"url": ""}}, "database.url"},
		{"HalfACA", map[string]any{"ca": map[string]any{"cert": "-----BEGIN CERTIFICATE-----\n"}}, "ca.cert and ca.key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vals, err := chartutil.CoalesceValues(loadChart(t), chartutil.CoalesceTables(tt.set, readValues(t, "default")))
			if err != nil {
				t.Fatal(err)
			}
			_, err = renderChart(t, vals)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("render with %v: %v, want an error naming %s", tt.set, err, tt.want)
			}
		})
	}
}

// TestStrictDecodingCatchesMisspeltFields shows that the decoding the
// render checks rely on refuses what Kubernetes would silently drop.
func TestStrictDecodingCatchesMisspeltFields(t *testing.T) {
	for name, doc := range map[string]string{
		"Deployment":   "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec: {replica: 2}\n",
		"ScaledObject": "apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata: {name: x}\nspec: {scaleTargetRef: {name: x}, minReplicas: 0}\n",
		"Duplicate":    "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {type: ClusterIP, type: NodePort}\n",
		"UnknownKind":  "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: x}\n",
	} {
		if _, err := decodeStrict(doc); err == nil {
			t.Errorf("%s: a misspelt, duplicate or unchecked field decoded without error", name)
		}
	}
}

// checkRobotPoolFlag fails the test unless the server's container has the
// pool's --robot-pool, and the server takes it.
func checkRobotPoolFlag(t *testing.T, server *appsv1.Deployment, want string) {
	t.Helper()
	args := server.Spec.Template.Spec.Containers[0].Args
	if !slices.Contains(args, want) {
		t.Errorf("server args %q, want %s", args, want)
		return
	}
	cmd := exec.Command(filepath.Join(bin, "casare-server"), want, "--data-dir", t.TempDir(), "ca", "init")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("casare-server %s: %v\n%s", want, err, out)
	}
}
