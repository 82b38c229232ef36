// Package artifact holds the artifact.save step: it keeps a file the job
// made (a report, an export) with the job on the control plane, where
// `casarectl jobs artifact` and the API return it after the job's work
// directory is gone.
package artifact

import (
	"context"
	"mime"
	"os"
	"path/filepath"

	"github.com/casarerpa/casare/agent/step"
	"github.com/casarerpa/casare/agent/step/files"
	agentv1 "github.com/casarerpa/casare/rpc/casare/agent/v1"
)

// Actions returns the artifact.* steps.
func Actions() []*step.Action {
	return []*step.Action{saveAction}
}

type saveParams struct {
	Path        string `json:"path" step:"required" doc:"File to keep, relative to the job's work directory or absolute within an allowed root."`
	Name        string `json:"name" doc:"Name of the artifact, a plain file name of at most 200 bytes, unique within the job (saving a name again replaces it); default the file's name."`
	ContentType string `json:"content_type" doc:"MIME type; default from the name's extension, else application/octet-stream."`
}

type saveOutputs struct {
	Name string `json:"name" doc:"The artifact's name."`
	Size int64  `json:"size" doc:"Its size in bytes."`
}

const defaultContentType = "application/octet-stream"

var saveAction = step.Define("artifact.save", "Keeps a file with the job on the control plane, where the API and casarectl return it.",
	func(_ context.Context, env *step.Env, p saveParams) (saveOutputs, error) {
		path, err := files.ResolveParam(env, "path", p.Path)
		if err != nil {
			return saveOutputs{}, err
		}
		name := p.Name
		if name == "" {
			name = filepath.Base(path)
		}
		if err := agentv1.CheckArtifactName(name); err != nil {
			return saveOutputs{}, step.Businessf("with.name: %v", err)
		}
		info, err := os.Stat(path)
		switch {
		case os.IsNotExist(err):
			return saveOutputs{}, step.Businessf("with.path: %s does not exist", p.Path)
		case err != nil:
			return saveOutputs{}, step.Failf("with.path: %w", err)
		case info.IsDir():
			return saveOutputs{}, step.Businessf("with.path: %s is a directory, not a file", p.Path)
		case info.Size() > agentv1.MaxArtifactSize:
			return saveOutputs{}, step.Businessf("with.path: %s is %d bytes, more than an artifact may hold (%d MiB)", p.Path, info.Size(), agentv1.MaxArtifactSize>>20)
		}
		contentType := p.ContentType
		if contentType == "" {
			contentType = typeOf(name, path)
		}
		if env.SaveArtifact == nil {
			env.Logf("info", "artifact.save: nothing stores artifacts in this run; %s stays in the work directory as %s", name, path)
			return saveOutputs{Name: name, Size: info.Size()}, nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return saveOutputs{}, step.Failf("read %s: %w", p.Path, err)
		}
		if len(data) > agentv1.MaxArtifactSize {
			// It grew since the check.
			return saveOutputs{}, step.Businessf("with.path: %s is %d bytes, more than an artifact may hold (%d MiB)", p.Path, len(data), agentv1.MaxArtifactSize>>20)
		}
		if err := env.SaveArtifact(name, contentType, data); err != nil {
			return saveOutputs{}, step.Failf("artifact.save: %w", err)
		}
		return saveOutputs{Name: name, Size: int64(len(data))}, nil
	},
	step.Rejects("the path is outside the job's work directory and the allowed roots"),
	step.Rejects("the file does not exist or is a directory"),
	step.Rejects("the name is not a plain file name of at most 200 bytes"),
	step.Rejects("the file is larger than 64 MiB"),
	step.Fails("the control plane refused the artifact (the job keeps 256 already) or the job ended before it was stored"),
)

// typeOf guesses a content type from the artifact's name, else the file's.
func typeOf(name, path string) string {
	for _, p := range []string{name, path} {
		if t := mime.TypeByExtension(filepath.Ext(p)); t != "" {
			return t
		}
	}
	return defaultContentType
}
