package e2e

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect/v2"
	"connectrpc.com/connect/v2/connecthttp"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
	"github.com/casarerpa/casare/rpc/casare/v1/casarev1connect"
	"github.com/casarerpa/casare/server/queue/queuetest"
	"github.com/casarerpa/casare/server/registry/registrytest"
	"github.com/casarerpa/casare/server/vault"
)

// The plaintexts the test stores: none may appear in the database, the
// API's answers or the job logs.
const (
	hqPassword      = "hq-s3cret-password-0042"
	defaultPassword = "def-pw-7"
	hqToken         = "hq-token-abcdefgh-1234"
	defaultToken    = "token-1"
	secretPin       = "pin-0815-secret-input"
)

// TestAssetsReachTheirRobots stores a credential and a secret asset, each
// with an override for site=hq, runs a job reading them on a robot at hq
// and one elsewhere, and checks that each got its own values, that the
// logs show *** for them, and that the database holds none of them (nor
// the job's secret input) in plain text.
func TestAssetsReachTheirRobots(t *testing.T) {
	t.Parallel()
	t.Run("embedded", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		s := startServer(t, dir, jobServerFlags...)
		assetsOnRobots(t, s, func() [][]byte { return rawFiles(t, dir) })
		rotateUnderRunningServer(t, s, dir)
	})
	t.Run("postgres+redis", func(t *testing.T) {
		t.Parallel()
		dbURL := registrytest.DatabaseURL(t)
		s := startServer(t, t.TempDir(), append(slices.Clone(jobServerFlags),
			"--database-url", dbURL, "--redis-url", queuetest.RedisURL(t, 10))...)
		assetsOnRobots(t, s, func() [][]byte { return tableContents(t, dbURL) })
	})
}

func assetsOnRobots(t *testing.T, s *serverProc, stored func() [][]byte) {
	ctx := context.Background()
	assets := casarev1connect.NewAssetServiceClient(connect.NewClient(connecthttp.NewTransport(http1, s.url()), bearer(s.adminToken())))
	put := func(a *casarev1.AssetInput) {
		t.Helper()
		if _, err := assets.PutAsset(ctx, &casarev1.PutAssetRequest{Asset: a}); err != nil {
			t.Fatalf("put asset %s (%s): %v", a.GetName(), a.GetSelector(), err)
		}
	}
	cred, secret := casarev1.AssetType_ASSET_TYPE_CREDENTIAL, casarev1.AssetType_ASSET_TYPE_SECRET
	put(&casarev1.AssetInput{Name: "sap", Type: cred, Username: "robot", Password: defaultPassword})
	put(&casarev1.AssetInput{Name: "sap", Type: cred, Username: "hq-robot", Password: hqPassword, Selector: "site=hq"})
	put(&casarev1.AssetInput{Name: "api_token", Type: secret, Value: defaultToken})
	put(&casarev1.AssetInput{Name: "api_token", Type: secret, Value: hqToken, Selector: "site=hq"})
	put(&casarev1.AssetInput{Name: "mail_host", Type: casarev1.AssetType_ASSET_TYPE_TEXT, Value: "mail.example.com"})
	put(&casarev1.AssetInput{Name: "mail_host", Type: casarev1.AssetType_ASSET_TYPE_TEXT, Value: "hq-mail.example.com", Selector: "site=hq"})

	f := newFleet(t, s)
	f.enrol("hq1", "--labels", "site=hq")
	f.enrol("lab1", "--labels", "site=lab")
	waitStatuses(t, s, map[string]string{"hq1": "IDLE", "lab1": "IDLE"}, 30*time.Second)

	// The workflow proves which values it got by their sizes and by the
	// usernames, never by the secrets, which would then be stored in it.
	// A size is computed from a secret, so as an output it is masked like
	// the secret; a log line shows it, being too short to give the secret
	// away.
	wf := workflow("login",
		step("login", "log", map[string]any{"message": "login ${{ credentials.sap.username }}:${{ credentials.sap.password }} token ${{ assets.api_token }} pin ${{ inputs.pin }} via ${{ assets.mail_host }}"}),
		step("sizes", "log", map[string]any{"message": "sizes ${{ size(credentials.sap.password) }} ${{ size(assets.api_token) }} ${{ size(inputs.pin) }}"}))
	wf.Inputs = map[string]*casarev1.InputSpec{"pin": {Type: "string", Required: true, Secret: true}}
	wf.Outputs = map[string]string{
		"user":     "${{ credentials.sap.username }}",
		"pw_size":  "${{ size(credentials.sap.password) }}",
		"tok_size": "${{ size(assets.api_token) }}",
		"pin_size": "${{ size(inputs.pin) }}",
		"mail":     "${{ assets.mail_host }}",
	}
	run := func(site string) (*casarev1.Job, []string) {
		t.Helper()
		job := f.submit(wf, func(r *casarev1.SubmitJobRequest) {
			r.Inputs, _ = structpb.NewStruct(map[string]any{"pin": secretPin})
			r.Requires = &casarev1.Requirements{Labels: map[string]string{"site": site}}
		})
		done := f.wait(job.GetId(), casarev1.JobStatus_JOB_STATUS_SUCCEEDED, 60*time.Second)
		return done, jobLog(t, f, job.GetId())
	}

	for _, tc := range []struct {
		site, robot, user, mail string
		pw, tok                 string
	}{
		{site: "hq", robot: "hq1", user: "hq-robot", mail: "hq-mail.example.com", pw: hqPassword, tok: hqToken},
		{site: "lab", robot: "lab1", user: "robot", mail: "mail.example.com", pw: defaultPassword, tok: defaultToken},
	} {
		job, log := run(tc.site)
		if f.ids[job.GetRobotId()] != tc.robot {
			t.Errorf("the %s job ran on %s, want %s", tc.site, f.ids[job.GetRobotId()], tc.robot)
		}
		got := job.GetResult().AsMap()
		want := map[string]any{"user": tc.user, "pw_size": "***", "tok_size": "***", "pin_size": "***", "mail": tc.mail}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("the %s job's output %s = %v, want %v (result %v)", tc.site, k, got[k], v, got)
			}
		}
		wantLine := "login " + tc.user + ":*** token *** pin *** via " + tc.mail
		if !slices.Contains(log, wantLine) {
			t.Errorf("the %s job's log = %q, want the line %q", tc.site, log, wantLine)
		}
		if sizes := fmt.Sprintf("sizes %d %d %d", len(tc.pw), len(tc.tok), len(secretPin)); !slices.Contains(log, sizes) {
			t.Errorf("the %s job's log = %q, want the line %q", tc.site, log, sizes)
		}
		// No read of the job gives the secret input back.
		res, err := f.jobs.GetJob(ctx, &casarev1.GetJobRequest{Id: job.GetId()})
		if err != nil {
			t.Fatal(err)
		}
		if b, _ := protojson.Marshal(res); bytes.Contains(b, []byte(secretPin)) {
			t.Errorf("GetJob shows the secret input: %s", b)
		}
		if got := res.GetJob().GetInputs().GetFields()["pin"].GetStringValue(); got != "***" {
			t.Errorf("GetJob shows the sealed secret input as %q, want it listed as ***", got)
		}
	}

	// No read of the assets gives a secret back.
	list, err := assets.ListAssets(ctx, &casarev1.ListAssetsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := protojson.Marshal(list)
	for _, plain := range []string{hqPassword, defaultPassword, hqToken, defaultToken} {
		if bytes.Contains(b, []byte(plain)) {
			t.Errorf("ListAssets shows %q", plain)
		}
	}
	// The robot's reads are audited.
	admin := casarev1connect.NewAdminServiceClient(connect.NewClient(connecthttp.NewTransport(http1, s.url()), bearer(s.adminToken())))
	audit, err := admin.ListAuditEvents(ctx, &casarev1.ListAuditEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	reads := 0
	for _, e := range audit.GetEvents() {
		if e.GetAction() == "assign" && strings.HasPrefix(e.GetActor(), "robot/") {
			reads++
		}
	}
	if reads < 2 {
		t.Errorf("%d audit events of robots reading assets, want one per job", reads)
	}

	// The search sees the rows: the text asset is there in plain text.
	raws := stored()
	if !slices.ContainsFunc(raws, func(b []byte) bool { return bytes.Contains(b, []byte("hq-mail.example.com")) }) {
		t.Fatal("the database contents searched do not hold the text asset: the search sees nothing")
	}
	for _, raw := range raws {
		for _, plain := range []string{hqPassword, defaultPassword, hqToken, defaultToken, secretPin} {
			if bytes.Contains(raw, []byte(plain)) {
				t.Errorf("the database holds %q in plain text", plain)
			}
		}
	}
}

// rawFiles returns the bytes of every file of the SQLite database.
func rawFiles(t *testing.T, dir string) [][]byte {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "casare.db*"))
	if len(files) == 0 {
		t.Fatalf("no SQLite files in %s", dir)
	}
	var out [][]byte
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// tableContents returns every row of every table of the test's schema,
// each as PostgreSQL's text of the row.
func tableContents(t *testing.T, dbURL string) [][]byte {
	t.Helper()
	db, err := sql.Open("pgx", dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query("SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()")
	if err != nil {
		t.Fatal(err)
	}
	var tables []string
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			t.Fatal(err)
		}
		tables = append(tables, name)
	}
	rows.Close()
	if !slices.Contains(tables, "assets") || !slices.Contains(tables, "jobs") {
		t.Fatalf("tables %v: not the test's schema", tables)
	}
	var out [][]byte
	for _, table := range tables {
		rows, err := db.Query(`SELECT t::text FROM "` + table + `" AS t`)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var text string
			if err := rows.Scan(&text); err != nil {
				t.Fatal(err)
			}
			out = append(out, []byte(text))
		}
		rows.Close()
	}
	return out
}

// rotateUnderRunningServer puts a new key first in the server's key file,
// the old one after it, rotates while the server runs, runs a job on it
// again, then shows that the old key alone no longer starts a server, and
// the new key alone does.
func rotateUnderRunningServer(t *testing.T, s *serverProc, dir string) {
	keyFile := filepath.Join(dir, "secret.key")
	oldKeys, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	newKey := vault.FormatKey(vault.NewKey())
	if err := os.WriteFile(keyFile, []byte(newKey+"\n"+string(oldKeys)), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(bin, "casare-server"), "secrets", "rotate", "--data-dir", dir)
	cmd.Env = filterEnv(os.Environ(), "CASARE_")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "values re-sealed: 6") {
		// 4 sealed assets, and the secret inputs of the 2 jobs.
		t.Fatalf("secrets rotate: %v\n%s", err, out)
	}

	// The running server reads the new data key on first sight.
	f := newFleet(t, s)
	wf := workflow("again", step("a", "log", map[string]any{"message": "size ${{ size(credentials.sap.password) }}"}))
	job := f.submit(wf, func(r *casarev1.SubmitJobRequest) {
		r.Requires = &casarev1.Requirements{Labels: map[string]string{"site": "hq"}}
	})
	f.wait(job.GetId(), casarev1.JobStatus_JOB_STATUS_SUCCEEDED, 60*time.Second)
	if log, want := jobLog(t, f, job.GetId()), fmt.Sprintf("size %d", len(hqPassword)); !slices.Contains(log, want) {
		t.Errorf("after rotation the job logged %q, want %q: the password of the hq robot", log, want)
	}
	s.stop()

	only := filepath.Join(t.TempDir(), "new.key")
	if err := os.WriteFile(only, []byte(newKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	wrong := exec.Command(filepath.Join(bin, "casare-server"), "--data-dir", dir, "--http-addr", "127.0.0.1:0", "--quic-addr", "127.0.0.1:0")
	wrong.Env = append(filterEnv(os.Environ(), "CASARE_"), "CASARE_SECRET_KEY="+string(oldKeys))
	out, err = wrong.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "the vault cannot be opened with the keys of CASARE_SECRET_KEY; nothing was changed") {
		t.Fatalf("a server with the retired key: %v\n%s", err, out)
	}
	s2 := startServer(t, dir, "--secret-key-file", only)
	s2.stop()
}

// TestAssetsRefuseBadInput tries what an attacker or a careless script
// would: each refusal names the field, and nothing is stored.
func TestAssetsRefuseBadInput(t *testing.T) {
	t.Parallel()
	s := startServer(t, t.TempDir())
	admin := s.adminToken()
	const put = "/casare.v1.AssetService/PutAsset"
	huge := strings.Repeat("x", 64<<10+1)
	for _, tc := range []struct {
		name, body, code, msg string
	}{
		{name: "UnknownType", body: `{"asset":{"name":"a","type":99,"value":"x"}}`, code: "invalid_argument", msg: "asset.type"},
		{name: "NoType", body: `{"asset":{"name":"a","value":"x"}}`, code: "invalid_argument", msg: "asset.type"},
		{name: "NotANumber", body: `{"asset":{"name":"a","type":"ASSET_TYPE_NUMBER","value":"abc"}}`, code: "invalid_argument", msg: `asset.value: "abc" is not a number`},
		{name: "NotABool", body: `{"asset":{"name":"a","type":"ASSET_TYPE_BOOL","value":"yes"}}`, code: "invalid_argument", msg: "asset.value: \"yes\" is not a bool"},
		{name: "CredentialWithoutPassword", body: `{"asset":{"name":"a","type":"ASSET_TYPE_CREDENTIAL","username":"u"}}`, code: "invalid_argument", msg: "asset.password: a credential needs a password"},
		{name: "TooLarge", body: `{"asset":{"name":"a","type":"ASSET_TYPE_TEXT","value":"` + huge + `"}}`, code: "invalid_argument", msg: "asset.value"},
		{name: "SecretTooLarge", body: `{"asset":{"name":"a","type":"ASSET_TYPE_SECRET","value":"` + huge + `"}}`, code: "invalid_argument", msg: "asset.value"},
		{name: "NUL", body: `{"asset":{"name":"a","type":"ASSET_TYPE_TEXT","value":"a\u0000b"}}`, code: "invalid_argument", msg: "asset.value"},
		{name: "NameNotAnIdentifier", body: `{"asset":{"name":"mail-host","type":"ASSET_TYPE_TEXT","value":"x"}}`, code: "invalid_argument", msg: "asset.name"},
		{name: "SelectorDoesNotParse", body: `{"asset":{"name":"a","type":"ASSET_TYPE_TEXT","value":"x","selector":"site"}}`, code: "invalid_argument", msg: `asset.selector: "site" is not key=value`},
		{name: "SelectorTwice", body: `{"asset":{"name":"a","type":"ASSET_TYPE_TEXT","value":"x","selector":"a=1,a=2"}}`, code: "invalid_argument", msg: "asset.selector: label a is given twice"},
		{name: "EmptySecret", body: `{"asset":{"name":"a","type":"ASSET_TYPE_SECRET"}}`, code: "invalid_argument", msg: "asset.value: a secret needs a value"},
		{name: "PasswordOnText", body: `{"asset":{"name":"a","type":"ASSET_TYPE_TEXT","value":"x","password":"p"}}`, code: "invalid_argument", msg: "asset.password"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := callErr(t, s.url(), admin, put, tc.body)
			if e.Code != tc.code || !strings.Contains(e.Message, tc.msg) {
				t.Errorf("%s: %s %q; want %s naming %q", tc.name, e.Code, e.Message, tc.code, tc.msg)
			}
		})
	}
	var list struct {
		Assets []any `json:"assets"`
	}
	callOK(t, s.url(), admin, "/casare.v1.AssetService/ListAssets", `{}`, &list)
	if len(list.Assets) != 0 {
		t.Errorf("refused puts stored %v", list.Assets)
	}

	// An override of another type than the asset's is refused.
	callOK(t, s.url(), admin, put, `{"asset":{"name":"n","type":"ASSET_TYPE_NUMBER","value":"1"}}`, nil)
	if e := callErr(t, s.url(), admin, put, `{"asset":{"name":"n","type":"ASSET_TYPE_TEXT","value":"x","selector":"a=1"}}`); e.Code != "failed_precondition" || !strings.Contains(e.Message, "asset.type: ") {
		t.Errorf("override of another type: %s %q", e.Code, e.Message)
	}

	// Roles: a viewer reads names and metadata, never values, and writes
	// nothing; an operator writes text, not secrets.
	var viewer, operator struct {
		Token string `json:"token"`
	}
	callOK(t, s.url(), admin, "/casare.v1.AdminService/CreateToken", `{"name":"v","role":"ROLE_VIEWER"}`, &viewer)
	callOK(t, s.url(), admin, "/casare.v1.AdminService/CreateToken", `{"name":"o","role":"ROLE_OPERATOR"}`, &operator)
	callOK(t, s.url(), admin, put, `{"asset":{"name":"sap","type":"ASSET_TYPE_CREDENTIAL","username":"u","password":"pw-not-for-you"}}`, nil)
	if e := callErr(t, s.url(), viewer.Token, put, `{"asset":{"name":"t","type":"ASSET_TYPE_TEXT","value":"x"}}`); e.Code != "permission_denied" {
		t.Errorf("a viewer's put: %s %q", e.Code, e.Message)
	}
	if e := callErr(t, s.url(), operator.Token, put, `{"asset":{"name":"s","type":"ASSET_TYPE_SECRET","value":"x"}}`); e.Code != "permission_denied" || !strings.Contains(e.Message, "only an admin token writes secret assets") {
		t.Errorf("an operator's secret: %s %q", e.Code, e.Message)
	}
	if e := callErr(t, s.url(), operator.Token, "/casare.v1.AssetService/DeleteAsset", `{"name":"sap"}`); e.Code != "permission_denied" {
		t.Errorf("an operator's delete of a credential: %s %q", e.Code, e.Message)
	}
	callOK(t, s.url(), operator.Token, put, `{"asset":{"name":"t","type":"ASSET_TYPE_TEXT","value":"x"}}`, nil)
	for _, token := range []string{viewer.Token, operator.Token, admin} {
		_, b := call(t, s.url(), token, "/casare.v1.AssetService/GetAsset", `{"name":"sap"}`)
		if bytes.Contains(b, []byte("pw-not-for-you")) || !bytes.Contains(b, []byte(`"password":"***"`)) {
			t.Errorf("GetAsset shows %s", b)
		}
	}
}
