/*
 * A recording stand-in for Jenkins' Declarative Pipeline DSL, run under Groovy 2.4 (the Groovy line
 * Jenkins runs; Debian's `groovy`). One JVM for every file:
 *
 *     groovy DeclarativeStandIn.groovy REQUEST.json OUT.json
 *
 * REQUEST.json: {"files": [{"path": "...", "branches": [{"name": "main", "change_request": false}, ...]}]}
 * OUT.json (UTF-8): {path: {"pipeline": TRACE or null, "errors": [...]}}
 *
 * The Jenkinsfile is EVALUATED by Groovy itself (GroovyShell): every value a directive or step
 * receives is exactly what Groovy makes of the source, as Jenkins would hand it over: single-,
 * double- and triple-quoted strings, escapes, GString interpolation and `$` handling,
 * concatenation. `pipeline { }` and every block inside it are closures called with a recording
 * delegate (DELEGATE_FIRST, as ModelInterpreter does), so the structure is recorded in the order
 * Jenkins' interpreter visits it, not by reading the text.
 *
 * MODELLED (recorded into the trace, with normalised arguments):
 *   - pipeline: agent, options, environment, stages, post, parameters, triggers, tools, libraries;
 *   - stage: agent (none, any, label, node, docker, dockerfile, kubernetes), when, options, input,
 *     environment, steps | stages | parallel, failFast, post, tools; sections are collected first
 *     and then recorded in interpreter order (agent, when, options, input, environment, body, post),
 *     so their order in the file does not matter, as in Jenkins; a repeated section is an error;
 *   - when: beforeAgent/beforeInput/beforeOptions, branch (GLOB/EQUALS/REGEXP comparators exactly
 *     as pipeline-model-definition's Comparator: Ant's SelectorUtils.matchPath, case-insensitive),
 *     changeRequest() (true on change-request builds), anyOf/allOf/not, expression { } and
 *     environment name/value (evaluated per requested branch with BRANCH_NAME/CHANGE_ID set),
 *     buildingTag/tag (false: the requested builds are branch and change-request builds),
 *     equals(expected, actual). Each condition carries its result for every requested branch;
 *   - options: timeout, retry, lock, preserveStashes, skipDefaultCheckout, disableConcurrentBuilds,
 *     buildDiscarder/logRotator, timestamps, ansiColor, quietPeriod, skipStagesAfterUnstable,
 *     parallelsAlwaysFailFast, checkoutToSubdirectory, newContainerPerStage, durabilityHint,
 *     disableResume, overrideIndexTriggers, rateLimitBuilds;
 *   - input: message, ok, submitter, id, submitterParameter, parameters;
 *   - environment: `NAME = value` (the value as Groovy evaluates it, then as a String, as
 *     ModelInterpreter's "${k}=${v}" does) and `NAME = credentials('id')`; a GString may refer to
 *     variables declared before it, `env.X` or Jenkins-provided variables;
 *   - steps (also inside post conditions and script { }): sh, echo, error, stash, unstash,
 *     archiveArtifacts, junit, input, sleep, deleteDir, cleanWs, checkout, writeFile, readFile,
 *     fileExists, isUnix, pwd, milestone, and the block steps timeout, retry, lock, catchError,
 *     warnError, withCredentials (string, usernamePassword, usernameColonPassword, file,
 *     sshUserPrivateKey, certificate, gitUsernamePassword (Git plugin), [$class: ...] maps such as
 *     AmazonWebServicesCredentialsBinding), withEnv, dir, node (scripted, with or without a label
 *     expression), script, cache (Job Cacher, with arbitraryFileCache), parallel (scripted, map of
 *     closures); `lock` (option or step) records all its arguments (resource, extra, label,
 *     quantity); `env.X` reads the variables declared
 *     so far (credentials read as a marker "@@credentials:ID@@", so a secret interpolated into a
 *     command by Groovy shows up in the trace) and `env.X = v` is recorded as a step;
 *   - post: always, changed, fixed, regression, aborted, success, unsuccessful, unstable, failure,
 *     notBuilt, cleanup.
 *
 * NOT MODELLED: running anything (steps are recorded, not executed; script { } blocks and
 * expression { } conditions are evaluated by Groovy, script blocks once, with the first requested
 * branch as BRANCH_NAME); the CPS transformation and script-security sandbox; shared libraries;
 * matrix; Declarative's own validation (the block grammar is checked elsewhere:
 * pipeline.render.validate.check_declarative on Groovy's AST); credential types (a credentials()
 * binding records its id, not whether it is secret text or username/password); tool
 * installation; changeset/changelog/triggeredBy conditions (recorded with unknown results).
 * Any directive, option, step or name not listed above is reported as an error, so a render that
 * starts using something new fails until this model learns it.
 * What happens at run time (skipping, post conditions, agents, failures) is modelled in Python
 * (tests/ci_grammar/jenkins_model.py) on top of this trace.
 */
import groovy.json.JsonOutput
import groovy.json.JsonSlurper
import org.apache.tools.ant.types.selectors.SelectorUtils

class Ctx {
    final List<String> errors = []
    final List<Map> branches
    Ctx(List<Map> branches) { this.branches = branches }
    void error(String where, String message) { errors << (where + ': ' + message) }
    String firstBranch() { branches ? branches[0].name : 'main' }
}

class Sym {
    final String name
    Sym(String name) { this.name = name }
    String toString() { name }
}

class CredRef {
    final String id
    CredRef(String id) { this.id = id }
    String toString() { '@@credentials:' + id + '@@' }
}

/** Converts what Groovy evaluated into JSON-able values (GString -> String; closures are errors). */
class Plain {
    static Object of(Ctx ctx, String where, Object value) {
        if (value == null || value instanceof Boolean || value instanceof Number) return value
        if (value instanceof CharSequence) return value.toString()
        if (value instanceof Sym) return [symbol: value.name]
        if (value instanceof CredRef) return [credentials: value.id]
        if (value instanceof Map) {
            def out = [:]
            value.each { k, v -> out[k.toString()] = of(ctx, where, v) }
            return out
        }
        if (value instanceof Collection || value instanceof Object[]) return value.collect { of(ctx, where, it) }
        ctx.error(where, 'unexpected value of type ' + value.getClass().name)
        return value.toString()
    }

    static String string(Object value) { value == null ? null : value.toString() }
}

/** The environment variables visible at a point: innermost scope first, then Jenkins-provided ones. */
class EnvScope {
    final EnvScope parent
    final Map<String, String> values = [:]
    EnvScope(EnvScope parent) { this.parent = parent }
    boolean has(String name) { values.containsKey(name) || (parent != null && parent.has(name)) }
    String get(String name) { values.containsKey(name) ? values[name] : parent?.get(name) }
    void put(String name, String value) { values[name] = value }

    static EnvScope jenkins(Ctx ctx, Map branch) {
        def scope = new EnvScope(null)
        boolean cr = branch?.change_request ?: false
        scope.put('BRANCH_NAME', branch?.name ?: ctx.firstBranch())
        if (cr) {
            scope.put('CHANGE_ID', '7')
            scope.put('CHANGE_TARGET', branch?.change_target ?: 'main')
            scope.put('CHANGE_BRANCH', branch?.change_branch ?: 'feature/change')
        }
        scope.put('BUILD_NUMBER', '1')
        scope.put('BUILD_ID', '1')
        scope.put('JOB_NAME', 'standin/' + (branch?.name ?: ctx.firstBranch()))
        scope.put('WORKSPACE', '/var/jenkins/workspace/standin')
        scope.put('JENKINS_URL', 'http://jenkins.invalid/')
        scope.put('BUILD_URL', 'http://jenkins.invalid/job/standin/1/')
        return scope
    }
}

/** `env` inside the DSL: reads the visible variables, records assignments as steps. */
class EnvProxy {
    private final EnvScope scope
    private final Closure onSet
    EnvProxy(EnvScope scope, Closure onSet) { this.scope = scope; this.onSet = onSet }
    Object getProperty(String name) { scope.get(name) }
    void setProperty(String name, Object value) {
        String s = Plain.string(value)
        scope.put(name, s)
        if (onSet != null) onSet.call(name, s)
    }
    Object getAt(String name) { scope.get(name) }
}

/** Calls a closure with a recording delegate, the way ModelInterpreter calls DSL closures. */
class Call {
    static Object with(Object delegate, Closure body) {
        Closure c = body.rehydrate(delegate, body.owner, body.thisObject)
        c.resolveStrategy = Closure.DELEGATE_FIRST
        return c.call()
    }
}

/** Collects the sections of a `pipeline { }` or `stage { }` body (name -> arguments), in order. */
class Sections {
    private final Ctx ctx
    private final String where
    private final List<String> allowed
    final Map<String, List> found = [:]

    Sections(Ctx ctx, String where, List<String> allowed) {
        this.ctx = ctx; this.where = where; this.allowed = allowed
    }

    def methodMissing(String name, Object args) {
        List list = (args as Object[]).toList()
        if (!(name in allowed)) {
            ctx.error(where, "'" + name + "' is not a section or directive here")
        } else if (found.containsKey(name)) {
            ctx.error(where, "'" + name + "' appears more than once")
        } else {
            found[name] = list
        }
        return null
    }

    def propertyMissing(String name) {
        if (name == 'any' || name == 'none') return new Sym(name)
        ctx.error(where, "unknown name '" + name + "'")
        return null
    }

    Closure closure(String name) {
        List args = found[name]
        if (args == null) return null
        if (args.size() == 1 && args[0] instanceof Closure) return (Closure) args[0]
        ctx.error(where, "'" + name + "' takes a block")
        return null
    }
}

/** Records `name value` calls into a map: agent { docker { image 'x'; args '-v ...' } } and the like. */
class KeyValues {
    private final Ctx ctx
    private final String where
    final Map values = [:]
    KeyValues(Ctx ctx, String where) { this.ctx = ctx; this.where = where }
    def methodMissing(String name, Object args) {
        List list = (args as Object[]).toList()
        if (list.size() == 1 && list[0] instanceof Closure) {
            def nested = new KeyValues(ctx, where + '.' + name)
            Call.with(nested, (Closure) list[0])
            values[name] = nested.values
        } else {
            values[name] = Plain.of(ctx, where, list.size() == 1 ? list[0] : list)
        }
        return null
    }
    def propertyMissing(String name) {
        ctx.error(where, "unknown name '" + name + "'")
        return null
    }
}

class AgentBlock {
    private final Ctx ctx
    private final String where
    Map agent = null
    AgentBlock(Ctx ctx, String where) { this.ctx = ctx; this.where = where }

    static Map record(Ctx ctx, String where, List args) {
        if (args == null) return null
        if (args.size() == 1 && args[0] instanceof Sym) return [kind: args[0].name]
        if (args.size() == 1 && args[0] instanceof Closure) {
            def block = new AgentBlock(ctx, where)
            Call.with(block, (Closure) args[0])
            if (block.agent == null) ctx.error(where, 'agent block names no agent type')
            return block.agent
        }
        ctx.error(where, 'agent takes none, any or a block')
        return null
    }

    private void set(Map value) {
        if (agent != null) ctx.error(where, 'agent block names more than one agent type')
        agent = value
    }

    def label(Object label) { set([kind: 'label', label: Plain.string(label)]); null }

    def methodMissing(String name, Object args) {
        List list = (args as Object[]).toList()
        if (!(name in ['node', 'docker', 'dockerfile', 'kubernetes'])) {
            ctx.error(where, "unknown agent type '" + name + "'")
            return null
        }
        Map value = [kind: name]
        if (list.size() == 1 && list[0] instanceof Closure) {
            def kv = new KeyValues(ctx, where + '.' + name)
            Call.with(kv, (Closure) list[0])
            value.putAll(kv.values)
        } else if (list.size() == 1) {
            value[name == 'docker' ? 'image' : 'value'] = Plain.of(ctx, where, list[0])
        }
        set(value)
        return null
    }

    def propertyMissing(String name) {
        ctx.error(where, "unknown name '" + name + "'")
        return null
    }
}

/** when { }: conditions, each with its result for every requested branch. */
class WhenBlock {
    private final Ctx ctx
    private final String where
    private final boolean nested
    final Map flags = [beforeAgent: false, beforeInput: false, beforeOptions: false]
    final List<Map> conditions = []

    WhenBlock(Ctx ctx, String where, boolean nested) { this.ctx = ctx; this.where = where; this.nested = nested }

    private void flag(String name, Object value) {
        if (nested) ctx.error(where, name + ' is only allowed directly in when')
        flags[name] = value as boolean
    }
    def beforeAgent(Object v) { flag('beforeAgent', v); null }
    def beforeInput(Object v) { flag('beforeInput', v); null }
    def beforeOptions(Object v) { flag('beforeOptions', v); null }

    private Map perBranch(Closure test) {
        Map results = [:]
        for (Map b in ctx.branches) {
            results[b.name] = test.call(b)
        }
        return results
    }

    private void add(String kind, Map args, Map results, List children = []) {
        conditions << [kind: kind, args: args, results: results, children: children]
    }

    static boolean branchMatches(String pattern, String actual, String comparator) {
        // BranchConditional.branchMatches + Comparator (pipeline-model-definition)
        boolean noActual = actual == null || actual.isEmpty()
        boolean noPattern = pattern == null || pattern.isEmpty()
        if (noActual && noPattern) return true
        if (noActual || noPattern) return false
        String name = (comparator ?: 'GLOB').toUpperCase()
        if (name == 'REGEXP') return actual.matches(pattern)
        if (name == 'EQUALS') return actual == pattern
        // GLOB (the default, also for unknown names): Ant path matching, case-insensitive
        String safePattern = pattern.replace('/' as char, File.separatorChar)
        String safeName = actual.replace('/' as char, File.separatorChar)
        return SelectorUtils.matchPath(safePattern, safeName, false)
    }

    def branch(Object pattern) {
        if (pattern instanceof Map) {
            String p = Plain.string(pattern.pattern)
            String c = Plain.string(pattern.comparator)
            add('branch', [pattern: p, comparator: c ?: 'GLOB'], perBranch { Map b -> branchMatches(p, b.name, c) })
        } else {
            String p = Plain.string(pattern)
            add('branch', [pattern: p, comparator: 'GLOB'], perBranch { Map b -> branchMatches(p, b.name, null) })
        }
        null
    }

    def changeRequest(Map args = [:]) {
        if (args) {
            add('changeRequest', Plain.of(ctx, where, args), perBranch { Map b -> null })
        } else {
            add('changeRequest', [:], perBranch { Map b -> (b.change_request ?: false) as boolean })
        }
        null
    }

    def buildingTag() { add('buildingTag', [:], perBranch { Map b -> false }); null }

    def tag(Object pattern) { add('tag', [pattern: Plain.of(ctx, where, pattern)], perBranch { Map b -> false }); null }

    def equals(Map args) {
        def expected = args.expected
        def actual = args.actual
        add('equals', [expected: Plain.of(ctx, where, expected), actual: Plain.of(ctx, where, actual)],
            perBranch { Map b -> expected == actual })
        null
    }

    def environment(Map args) {
        String name = Plain.string(args.name)
        String value = Plain.string(args.value)
        add('environment', [name: name, value: value], perBranch { Map b ->
            EnvScope.jenkins(ctx, b).get(name) == value
        })
        null
    }

    def expression(Closure body) {
        add('expression', [:], perBranch { Map b ->
            def env = new EnvProxy(EnvScope.jenkins(ctx, b), null)
            def delegate = new ExpressionScope(ctx, where + '.expression', env)
            try {
                return Call.with(delegate, body) as boolean
            } catch (Throwable t) {
                ctx.error(where, 'expression failed: ' + t)
                return null
            }
        })
        null
    }

    private void nestedBlock(String kind, Closure body) {
        def block = new WhenBlock(ctx, where + '.' + kind, true)
        Call.with(block, body)
        List<Map> children = block.conditions
        Map results = perBranch { Map b ->
            List values = children.collect { it.results[b.name] }
            if (values.any { it == null }) return null
            if (kind == 'anyOf') return values.any { it }
            if (kind == 'allOf') return values.every { it }
            if (values.size() != 1) {
                ctx.error(where, 'not takes exactly one condition')
                return null
            }
            return !values[0]
        }
        add(kind, [:], results, children)
    }

    def anyOf(Closure body) { nestedBlock('anyOf', body); null }
    def allOf(Closure body) { nestedBlock('allOf', body); null }
    def not(Closure body) { nestedBlock('not', body); null }

    def methodMissing(String name, Object args) {
        if (name in ['changeset', 'changelog', 'triggeredBy', 'isRestartedRun']) {
            add(name, [args: Plain.of(ctx, where, (args as Object[]).toList())], perBranch { Map b -> null })
        } else {
            ctx.error(where, "unknown when condition '" + name + "'")
        }
        return null
    }

    def propertyMissing(String name) {
        ctx.error(where, "unknown name '" + name + "'")
        return null
    }
}

/** The delegate of an expression { } condition: `env`, `params`, `currentBuild` only. */
class ExpressionScope {
    private final Ctx ctx
    private final String where
    private final EnvProxy env
    ExpressionScope(Ctx ctx, String where, EnvProxy env) { this.ctx = ctx; this.where = where; this.env = env }
    def propertyMissing(String name) {
        if (name == 'env') return env
        if (name == 'params') return [:]
        if (name == 'currentBuild') return [result: null, currentResult: 'SUCCESS', number: 1]
        if (name == 'BRANCH_NAME') return env.getProperty('BRANCH_NAME')
        ctx.error(where, "unknown name '" + name + "'")
        return null
    }
    def methodMissing(String name, Object args) {
        ctx.error(where, "unknown method '" + name + "'")
        return null
    }
}

class OptionsBlock {
    private final Ctx ctx
    private final String where
    final List<Map> options = []
    OptionsBlock(Ctx ctx, String where) { this.ctx = ctx; this.where = where }

    private void add(String name, Map args) { options << [name: name, args: Plain.of(ctx, where, args)] }

    def timeout(Object args) {
        if (args instanceof Map) add('timeout', [time: args.time, unit: args.unit ?: 'MINUTES', activity: args.activity ?: false])
        else add('timeout', [time: args, unit: 'MINUTES', activity: false])
        null
    }
    def retry(Object args) {
        if (args instanceof Map) add('retry', [count: args.count, conditions: Plain.string(args.conditions)])
        else add('retry', [count: args])
        null
    }
    def lock(Object args) {
        if (args instanceof Map) add('lock', new LinkedHashMap(args))
        else add('lock', [resource: Plain.string(args)])
        null
    }
    def logRotator(Map args) { return [logRotator: Plain.of(ctx, where, args)] }

    def methodMissing(String name, Object args) {
        List list = (args as Object[]).toList()
        List known = ['preserveStashes', 'skipDefaultCheckout', 'disableConcurrentBuilds', 'buildDiscarder', 'timestamps',
                      'ansiColor', 'quietPeriod', 'skipStagesAfterUnstable', 'parallelsAlwaysFailFast',
                      'checkoutToSubdirectory', 'newContainerPerStage', 'durabilityHint', 'disableResume',
                      'overrideIndexTriggers', 'rateLimitBuilds']
        if (name in known) {
            add(name, [args: list])
        } else {
            ctx.error(where, "unknown option '" + name + "'")
        }
        return null
    }

    def propertyMissing(String name) {
        ctx.error(where, "unknown name '" + name + "'")
        return null
    }
}

class InputBlock {
    private final Ctx ctx
    private final String where
    final Map input = [message: null, ok: null, submitter: null, id: null, submitterParameter: null, parameters: []]
    InputBlock(Ctx ctx, String where) { this.ctx = ctx; this.where = where }
    def message(Object v) { input.message = Plain.string(v); null }
    def ok(Object v) { input.ok = Plain.string(v); null }
    def submitter(Object v) { input.submitter = Plain.string(v); null }
    def id(Object v) { input.id = Plain.string(v); null }
    def submitterParameter(Object v) { input.submitterParameter = Plain.string(v); null }
    def parameters(Closure body) {
        def kv = new KeyValues(ctx, where + '.parameters')
        Call.with(kv, body)
        input.parameters = kv.values
        null
    }
    def methodMissing(String name, Object args) {
        ctx.error(where, "unknown input option '" + name + "'")
        return null
    }
    def propertyMissing(String name) {
        ctx.error(where, "unknown name '" + name + "'")
        return null
    }
}

/** environment { NAME = value; SECRET = credentials('id') } */
class EnvironmentBlock {
    private final Ctx ctx
    private final String where
    private final EnvScope scope
    private final List<Map> items = []
    EnvironmentBlock(Ctx ctx, String where, EnvScope scope) { this.ctx = ctx; this.where = where; this.scope = scope }

    List<Map> recorded() { items }

    def credentials(Object id) { new CredRef(Plain.string(id)) }

    void setProperty(String name, Object value) {
        if (items.any { it.name == name }) ctx.error(where, "'" + name + "' is set twice")
        if (value instanceof CredRef) {
            items << [name: name, credentials: value.id]
            scope.put(name, value.toString())
        } else if (value instanceof CharSequence || value instanceof Number || value instanceof Boolean || value == null) {
            String s = Plain.string(value)
            items << [name: name, value: s]
            scope.put(name, s)
        } else {
            ctx.error(where, "'" + name + "' is set to a " + value.getClass().name)
        }
    }

    Object getProperty(String name) {
        if (name == 'env') return new EnvProxy(scope, null)
        if (scope.has(name)) return scope.get(name)
        ctx.error(where, "unknown name '" + name + "'")
        return null
    }

    def methodMissing(String name, Object args) {
        ctx.error(where, "unknown function '" + name + "' in environment")
        return null
    }
}

/** The steps of a steps { } block, a post condition or a script { } block. */
class StepsBlock {
    private final Ctx ctx
    private final String where
    private final EnvScope scope
    private List<Map> current = []
    private final List<Map> top

    StepsBlock(Ctx ctx, String where, EnvScope scope) {
        this.ctx = ctx; this.where = where; this.scope = scope; this.top = current
    }

    List<Map> recorded() { top }

    private Object record(String step, Map args) {
        current << [step: step, args: Plain.of(ctx, where + '.' + step, args), body: null]
        return null
    }

    private Object wrap(String step, Map args, Closure body) {
        Map entry = [step: step, args: Plain.of(ctx, where + '.' + step, args), body: []]
        current << entry
        List<Map> saved = current
        current = entry.body
        try {
            Call.with(this, body)
        } finally {
            current = saved
        }
        return null
    }

    // --- plain steps
    def sh(Object args) {
        if (args instanceof Map) {
            record('sh', [script: Plain.string(args.script), returnStdout: args.returnStdout ?: false,
                          returnStatus: args.returnStatus ?: false, label: Plain.string(args.label)])
            return args.returnStdout ? '' : (args.returnStatus ? 0 : null)
        }
        record('sh', [script: Plain.string(args), returnStdout: false, returnStatus: false, label: null])
    }
    def echo(Object message) { record('echo', [message: Plain.string(message)]) }
    def error(Object message) { record('error', [message: Plain.string(message)]) }
    def stash(Object args) {
        if (args instanceof Map) {
            record('stash', [name: Plain.string(args.name), includes: Plain.string(args.includes) ?: '',
                             excludes: Plain.string(args.excludes) ?: '', allowEmpty: args.allowEmpty ?: false,
                             useDefaultExcludes: args.containsKey('useDefaultExcludes') ? args.useDefaultExcludes : true])
        } else {
            record('stash', [name: Plain.string(args), includes: '', excludes: '', allowEmpty: false, useDefaultExcludes: true])
        }
    }
    def unstash(Object args) {
        record('unstash', [name: Plain.string(args instanceof Map ? args.name : args)])
    }
    def archiveArtifacts(Object args) {
        record('archiveArtifacts', args instanceof Map ? new LinkedHashMap(args) : [artifacts: Plain.string(args)])
    }
    def junit(Object args) {
        record('junit', args instanceof Map ? new LinkedHashMap(args) : [testResults: Plain.string(args)])
    }
    def input(Object args) {
        record('input', args instanceof Map ? new LinkedHashMap(args) : [message: Plain.string(args)])
    }
    def sleep(Object args) { record('sleep', args instanceof Map ? new LinkedHashMap(args) : [time: args]) }
    def deleteDir() { record('deleteDir', [:]) }
    def cleanWs(Map args = [:]) { record('cleanWs', args) }
    def checkout(Object scm) { record('checkout', [scm: scm instanceof Sym ? scm.name : Plain.of(ctx, where, scm)]) }
    def writeFile(Map args) { record('writeFile', args) }
    def readFile(Object args) { record('readFile', args instanceof Map ? args : [file: args]); return '' }
    def fileExists(Object path) { record('fileExists', [file: Plain.string(path)]); return false }
    def isUnix() { return true }
    def pwd(Map args = [:]) { return '/var/jenkins/workspace/standin' }
    def milestone(Object args = null) { record('milestone', [args: args]) }

    // --- credentials bindings (values of withCredentials' list)
    def string(Map args) { return [binding: 'string', credentialsId: Plain.string(args.credentialsId), variable: Plain.string(args.variable)] }
    def usernamePassword(Map args) {
        return [binding: 'usernamePassword', credentialsId: Plain.string(args.credentialsId),
                usernameVariable: Plain.string(args.usernameVariable), passwordVariable: Plain.string(args.passwordVariable)]
    }
    def usernameColonPassword(Map args) { return [binding: 'usernameColonPassword', credentialsId: Plain.string(args.credentialsId), variable: Plain.string(args.variable)] }
    def file(Map args) { return [binding: 'file', credentialsId: Plain.string(args.credentialsId), variable: Plain.string(args.variable)] }
    def sshUserPrivateKey(Map args) {
        return [binding: 'sshUserPrivateKey', credentialsId: Plain.string(args.credentialsId), keyFileVariable: Plain.string(args.keyFileVariable),
                usernameVariable: Plain.string(args.usernameVariable), passphraseVariable: Plain.string(args.passphraseVariable)]
    }
    // Git plugin (GitUsernamePasswordBinding): GIT_USERNAME and GIT_PASSWORD, and GIT_ASKPASS for git itself
    def gitUsernamePassword(Map args) {
        return [binding: 'gitUsernamePassword', credentialsId: Plain.string(args.credentialsId),
                gitToolName: Plain.string(args.gitToolName)]
    }
    def certificate(Map args) {
        return [binding: 'certificate', credentialsId: Plain.string(args.credentialsId), keystoreVariable: Plain.string(args.keystoreVariable),
                passwordVariable: Plain.string(args.passwordVariable), aliasVariable: Plain.string(args.aliasVariable)]
    }

    // --- block steps
    def timeout(Object args, Closure body) {
        Map a = args instanceof Map ? [time: args.time, unit: args.unit ?: 'MINUTES', activity: args.activity ?: false] : [time: args, unit: 'MINUTES', activity: false]
        wrap('timeout', a, body)
    }
    def retry(Object args, Closure body) {
        wrap('retry', args instanceof Map ? [count: args.count] : [count: args], body)
    }
    def lock(Object args, Closure body) {
        wrap('lock', args instanceof Map ? new LinkedHashMap(args) : [resource: Plain.string(args)], body)
    }
    def catchError(Map args, Closure body) {
        wrap('catchError', [buildResult: Plain.string(args.buildResult) ?: 'FAILURE', stageResult: Plain.string(args.stageResult) ?: 'SUCCESS',
                            catchInterruptions: args.containsKey('catchInterruptions') ? args.catchInterruptions : true,
                            message: Plain.string(args.message)], body)
    }
    def catchError(Closure body) { catchError([:], body) }
    def warnError(Object message, Closure body) {
        wrap('catchError', [buildResult: 'UNSTABLE', stageResult: 'UNSTABLE', catchInterruptions: true, message: Plain.string(message)], body)
    }
    def withCredentials(List bindings, Closure body) {
        List normalised = bindings.collect { b ->
            if (!(b instanceof Map)) {
                ctx.error(where, 'withCredentials takes a list of bindings')
                return [:]
            }
            Map m = new LinkedHashMap(b)
            if (m.containsKey('$class') && !m.containsKey('binding')) m.binding = m['$class']
            if (m.binding == 'AmazonWebServicesCredentialsBinding') {
                m.accessKeyVariable = m.accessKeyVariable ?: 'AWS_ACCESS_KEY_ID'
                m.secretKeyVariable = m.secretKeyVariable ?: 'AWS_SECRET_ACCESS_KEY'
            }
            m
        }
        wrap('withCredentials', [bindings: normalised], body)
    }
    def withEnv(List overrides, Closure body) {
        wrap('withEnv', [overrides: overrides.collect { Plain.string(it) }], body)
    }
    def dir(Object path, Closure body) { wrap('dir', [path: Plain.string(path)], body) }
    // scripted node: allocates an executor (any agent, or one matching the label expression) and its workspace
    def node(Closure body) { wrap('node', [label: null], body) }
    def node(Object label, Closure body) { wrap('node', [label: Plain.string(label)], body) }
    // Job Cacher plugin: restores and saves files around its body (recorded, transparent to the model)
    def cache(Map args, Closure body) { wrap('cache', new LinkedHashMap(args), body) }
    def arbitraryFileCache(Map args) { return [cache: 'arbitraryFileCache'] + new LinkedHashMap(args) }
    def script(Closure body) { wrap('script', [:], body) }
    def parallel(Map branches) {
        Map entry = [step: 'parallel', args: [failFast: branches.failFast ?: false], body: null, branches: [:]]
        current << entry
        branches.each { k, v ->
            if (k == 'failFast') return
            List<Map> saved = current
            current = []
            try {
                Call.with(this, (Closure) v)
                entry.branches[k.toString()] = current
            } finally {
                current = saved
            }
        }
        return null
    }

    // --- names
    def propertyMissing(String name) {
        if (name == 'env') return new EnvProxy(scope, { String n, String v -> record('setEnv', [name: n, value: v]) })
        if (name == 'params') return [:]
        if (name == 'scm') return new Sym('scm')
        if (name == 'currentBuild') return [result: null, currentResult: 'SUCCESS', number: 1]
        if (scope.has(name)) return scope.get(name)
        ctx.error(where, "unknown name '" + name + "'")
        return null
    }

    def methodMissing(String name, Object args) {
        ctx.error(where, "unknown step '" + name + "'")
        return null
    }
}

class PostBlock {
    static final List<String> CONDITIONS = ['always', 'changed', 'fixed', 'regression', 'aborted', 'success',
                                            'unsuccessful', 'unstable', 'failure', 'notBuilt', 'cleanup']
    private final Ctx ctx
    private final String where
    private final EnvScope scope
    final Map<String, List<Map>> post = [:]
    PostBlock(Ctx ctx, String where, EnvScope scope) { this.ctx = ctx; this.where = where; this.scope = scope }

    def methodMissing(String name, Object args) {
        List list = (args as Object[]).toList()
        if (!(name in CONDITIONS) || list.size() != 1 || !(list[0] instanceof Closure)) {
            ctx.error(where, "unknown post condition '" + name + "'")
            return null
        }
        if (post.containsKey(name)) ctx.error(where, "post condition '" + name + "' appears twice")
        def steps = new StepsBlock(ctx, where + '.' + name, scope)
        Call.with(steps, (Closure) list[0])
        post[name] = steps.recorded()
        return null
    }

    def propertyMissing(String name) {
        ctx.error(where, "unknown name '" + name + "'")
        return null
    }
}

/** stages { stage('a') { ... } } and parallel { stage('b') { ... } } */
class StagesBlock {
    private final Ctx ctx
    private final String where
    private final EnvScope scope
    final List<Map> stages = []
    StagesBlock(Ctx ctx, String where, EnvScope scope) { this.ctx = ctx; this.where = where; this.scope = scope }

    def stage(Object name, Closure body) {
        String n = Plain.string(name)
        if (stages.any { it.name == n }) ctx.error(where, "stage '" + n + "' appears twice")
        stages << Declarative.stage(ctx, where + " > stage '" + n + "'", n, body, scope)
        null
    }

    def methodMissing(String name, Object args) {
        ctx.error(where, "'" + name + "' is not a stage")
        return null
    }

    def propertyMissing(String name) {
        ctx.error(where, "unknown name '" + name + "'")
        return null
    }
}

class Declarative {
    static final List<String> STAGE_SECTIONS = ['agent', 'when', 'options', 'input', 'environment', 'steps', 'stages',
                                                'parallel', 'matrix', 'post', 'tools', 'failFast']
    static final List<String> PIPELINE_SECTIONS = ['agent', 'options', 'environment', 'stages', 'post', 'parameters',
                                                   'triggers', 'tools', 'libraries']

    static Map generic(Ctx ctx, String where, Closure body) {
        if (body == null) return null
        def kv = new KeyValues(ctx, where)
        Call.with(kv, body)
        return kv.values
    }

    static List<Map> environment(Ctx ctx, String where, Closure body, EnvScope scope) {
        if (body == null) return []
        def block = new EnvironmentBlock(ctx, where + ' > environment', scope)
        Call.with(block, body)
        return block.recorded()
    }

    static List<Map> options(Ctx ctx, String where, Closure body) {
        if (body == null) return []
        def block = new OptionsBlock(ctx, where + ' > options')
        Call.with(block, body)
        return block.options
    }

    static Map post(Ctx ctx, String where, Closure body, EnvScope scope) {
        if (body == null) return [:]
        def block = new PostBlock(ctx, where + ' > post', scope)
        Call.with(block, body)
        return block.post
    }

    static List<Map> stages(Ctx ctx, String where, Closure body, EnvScope scope) {
        def block = new StagesBlock(ctx, where, scope)
        Call.with(block, body)
        return block.stages
    }

    static Map pipeline(Ctx ctx, Closure body) {
        def sections = new Sections(ctx, 'pipeline', PIPELINE_SECTIONS)
        Call.with(sections, body)
        EnvScope scope = new EnvScope(EnvScope.jenkins(ctx, ctx.branches ? ctx.branches[0] : null))
        Map rec = [:]
        if (!sections.found.containsKey('agent')) ctx.error('pipeline', 'no agent section')
        rec.agent = AgentBlock.record(ctx, 'pipeline > agent', sections.found['agent'])
        rec.options = options(ctx, 'pipeline', sections.closure('options'))
        rec.environment = environment(ctx, 'pipeline', sections.closure('environment'), scope)
        rec.parameters = generic(ctx, 'pipeline > parameters', sections.closure('parameters'))
        rec.triggers = generic(ctx, 'pipeline > triggers', sections.closure('triggers'))
        rec.tools = generic(ctx, 'pipeline > tools', sections.closure('tools'))
        rec.libraries = generic(ctx, 'pipeline > libraries', sections.closure('libraries'))
        Closure stagesBody = sections.closure('stages')
        if (stagesBody == null) ctx.error('pipeline', 'no stages section')
        rec.stages = stagesBody == null ? [] : stages(ctx, 'pipeline > stages', stagesBody, scope)
        rec.post = post(ctx, 'pipeline', sections.closure('post'), scope)
        return rec
    }

    static Map stage(Ctx ctx, String where, String name, Closure body, EnvScope outer) {
        def sections = new Sections(ctx, where, STAGE_SECTIONS)
        Call.with(sections, body)
        EnvScope scope = new EnvScope(outer)
        Map rec = [name: name]
        rec.agent = AgentBlock.record(ctx, where + ' > agent', sections.found['agent'])
        Closure when = sections.closure('when')
        if (when != null) {
            def block = new WhenBlock(ctx, where + ' > when', false)
            Call.with(block, when)
            if (!block.conditions) ctx.error(where, 'when has no condition')
            rec.when = [beforeAgent: block.flags.beforeAgent, beforeInput: block.flags.beforeInput,
                        beforeOptions: block.flags.beforeOptions, conditions: block.conditions]
        } else {
            rec.when = null
        }
        rec.options = options(ctx, where, sections.closure('options'))
        Closure input = sections.closure('input')
        if (input != null) {
            def block = new InputBlock(ctx, where + ' > input')
            Call.with(block, input)
            if (block.input.message == null) ctx.error(where, 'input has no message')
            rec.input = block.input
        } else {
            rec.input = null
        }
        rec.environment = environment(ctx, where, sections.closure('environment'), scope)
        rec.tools = generic(ctx, where + ' > tools', sections.closure('tools'))
        List failFast = sections.found['failFast']
        rec.failFast = failFast ? (failFast[0] as boolean) : false
        List bodies = ['steps', 'stages', 'parallel', 'matrix'].findAll { sections.found.containsKey(it) }
        if (bodies.size() != 1) ctx.error(where, 'a stage needs exactly one of steps, stages, parallel (found ' + bodies + ')')
        rec.steps = null
        rec.stages = null
        rec.parallel = null
        if (sections.found.containsKey('matrix')) ctx.error(where, 'matrix is not modelled')
        Closure steps = sections.closure('steps')
        if (steps != null) {
            def block = new StepsBlock(ctx, where + ' > steps', scope)
            Call.with(block, steps)
            rec.steps = block.recorded()
        }
        Closure nested = sections.closure('stages')
        if (nested != null) rec.stages = stages(ctx, where + ' > stages', nested, scope)
        Closure parallel = sections.closure('parallel')
        if (parallel != null) rec.parallel = stages(ctx, where + ' > parallel', parallel, scope)
        rec.post = post(ctx, where, sections.closure('post'), scope)
        return rec
    }
}

// ------------------------------------------------------------------------------------------- main
def request = new JsonSlurper().parse(new File(args[0]), 'UTF-8')
def results = [:]
for (Map file in request.files) {
    Ctx ctx = new Ctx(file.branches ?: [[name: 'main', change_request: false]])
    Map recorded = null
    int pipelines = 0
    try {
        def binding = new Binding()
        binding.setVariable('pipeline', { Closure body ->
            pipelines++
            recorded = Declarative.pipeline(ctx, body)
        })
        def shell = new GroovyShell(this.class.classLoader, binding)
        shell.evaluate(new File(file.path).getText('UTF-8'), 'Jenkinsfile')
        if (pipelines != 1) ctx.error('file', 'expected one pipeline block, found ' + pipelines)
    } catch (Throwable t) {
        ctx.error('file', 'evaluation failed: ' + t)
    }
    results[file.path] = [pipeline: recorded, errors: ctx.errors]
}
new File(args[1]).withWriter('UTF-8') { it << JsonOutput.toJson(results) }
