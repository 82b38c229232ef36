package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"
)

// TestCasarectl runs the user stories in testdata/*.txtar: each starts its
// own control plane on the embedded default and drives it with casarectl.
//
// Commands beyond testscript's own:
//
//	server start [flags]   start casare-server on a random port with
//	                       $WORK/data; sets CASARE_SERVER and CASARE_TOKEN
//	server restart         stop it with SIGTERM (it must exit 0) and start it again
//	server stop            stop it with SIGTERM
//	setenv-from NAME FILE  set NAME to the first line of FILE ($WORK relative)
//	setenv-json NAME FILE PATH  set NAME to a field of a JSON file, PATH like job.id
//	receiver …             a webhook receiver that checks signatures; see cmdReceiver
func TestCasarectl(t *testing.T) {
	t.Parallel()
	testscript.Run(t, testscript.Params{
		Dir: "testdata",
		Setup: func(env *testscript.Env) error {
			env.Setenv("PATH", bin+string(os.PathListSeparator)+env.Getenv("PATH"))
			env.Setenv("HOME", env.WorkDir)
			env.Setenv("XDG_CONFIG_HOME", filepath.Join(env.WorkDir, ".config"))
			env.Values["server"] = &serverHolder{}
			env.Values["receiver"] = &receiverHolder{}
			return nil
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"server":      cmdServer,
			"setenv-from": cmdSetenvFrom,
			"setenv-json": cmdSetenvJSON,
			"receiver":    cmdReceiver,
		},
		RequireExplicitExec: true,
	})
}

type scriptT struct {
	testing.TB
	ts *testscript.TestScript
}

func (s scriptT) Fatalf(format string, args ...any) { s.ts.Fatalf(format, args...) }
func (s scriptT) Fatal(args ...any)                 { s.ts.Fatalf("%s", strings.TrimSpace(fmt.Sprint(args...))) }
func (s scriptT) Helper()                           {}

func cmdServer(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) == 0 {
		ts.Fatalf("usage: server start|restart|stop [flags]")
	}
	t := scriptT{ts: ts}
	holder := ts.Value("server").(*serverHolder)
	if args[0] != "start" && holder.proc == nil {
		ts.Fatalf("server %s: no server started", args[0])
	}
	switch args[0] {
	case "start":
		if holder.proc != nil {
			ts.Fatalf("server already started")
		}
		proc := &serverProc{t: t, dataDir: ts.MkAbs("data")}
		proc.args = append([]string{"--data-dir", proc.dataDir}, args[1:]...)
		proc.start()
		ts.Defer(proc.kill)
		holder.proc = proc
		ts.Setenv("CASARE_SERVER", proc.url())
		ts.Setenv("CASARE_TOKEN", proc.adminToken())
	case "restart":
		holder.proc.restart()
		ts.Setenv("CASARE_SERVER", holder.proc.url())
	case "stop":
		holder.proc.stop()
	default:
		ts.Fatalf("unknown server command %q", args[0])
	}
}

// serverHolder carries a script's server between its commands.
type serverHolder struct{ proc *serverProc }

func cmdSetenvFrom(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: setenv-from NAME FILE")
	}
	line, _, _ := strings.Cut(ts.ReadFile(args[1]), "\n")
	ts.Setenv(args[0], strings.TrimSpace(line))
}

func cmdSetenvJSON(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 3 {
		ts.Fatalf("usage: setenv-json NAME FILE PATH")
	}
	var v any
	if err := json.Unmarshal([]byte(ts.ReadFile(args[1])), &v); err != nil {
		ts.Fatalf("%s: %v", args[1], err)
	}
	for _, key := range strings.Split(args[2], ".") {
		m, ok := v.(map[string]any)
		if !ok {
			ts.Fatalf("%s: %s is not an object", args[1], key)
		}
		v = m[key]
	}
	s, ok := v.(string)
	if !ok {
		ts.Fatalf("%s: %s is %v, not a string", args[1], args[2], v)
	}
	ts.Setenv(args[0], s)
}
