package expr

import (
	"cel.dev/cel-go/cel"
)

// Env checks and compiles expressions over variables its caller declares,
// in the workflow language (its functions, parser and value limits): a
// webhook trigger's mapping from a request to a job's inputs is one.
type Env struct {
	env *cel.Env
}

// NewEnv returns an environment with the variables vars declares, by name.
func NewEnv(vars map[string]*cel.Type) (*Env, error) {
	opts := library()
	for name, typ := range vars {
		opts = append(opts, cel.Variable(name, typ))
	}
	env, err := cel.NewEnv(opts...)
	if err != nil {
		return nil, err
	}
	return &Env{env: env}, nil
}

// Compile parses and type-checks src and returns its program, limited to
// costLimit units per evaluation (DefaultCostLimit when 0) and to the size
// limits of MaxValueBytes and MaxValueItems, with the type of its value.
// The error lists every problem with its column.
func (e *Env) Compile(src string, costLimit uint64) (*Program, *cel.Type, error) {
	if costLimit == 0 {
		costLimit = DefaultCostLimit
	}
	p, err := Parse(src)
	if err != nil {
		return nil, nil, err
	}
	parsed, iss := p.ast()
	if iss.Err() != nil {
		return nil, nil, issuesError(iss)
	}
	checked, iss := e.env.Check(parsed)
	if iss.Err() != nil {
		return nil, nil, issuesError(iss)
	}
	prg, err := e.env.Program(checked,
		cel.CostLimit(costLimit),
		cel.CostTracking(sizeCost{}),
		cel.CustomDecoratorV2(sizeDecorator),
	)
	if err != nil {
		return nil, nil, err
	}
	return &Program{src: src, prg: prg}, checked.OutputType(), nil
}
