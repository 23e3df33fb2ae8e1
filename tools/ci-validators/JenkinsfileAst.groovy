// Parse Jenkinsfiles with Groovy's own parser (the line Jenkins runs) to phase CONVERSION and print,
// per file, the syntax errors and the statement tree that tests check against the declarative
// grammar (pipeline.render.validate.check_declarative). One JVM for all files:
//     groovy tools/ci-validators/JenkinsfileAst.groovy FILE...
import groovy.json.JsonOutput
import org.codehaus.groovy.ast.expr.*
import org.codehaus.groovy.ast.stmt.*
import org.codehaus.groovy.control.CompilationUnit
import org.codehaus.groovy.control.CompilerConfiguration
import org.codehaus.groovy.control.MultipleCompilationErrorsException
import org.codehaus.groovy.control.Phases

def text(Expression e, List strings) {
    if (e instanceof ConstantExpression) {
        if (e.value instanceof String) { strings << e.value; return 'S' }
        return String.valueOf(e.value)
    }
    if (e instanceof VariableExpression) return e.name
    if (e instanceof MethodCallExpression) return e.methodAsString + '(' + args(e.arguments, strings).join(', ') + ')'
    if (e instanceof MapExpression) return e.mapEntryExpressions.collect { text(it.keyExpression, []) + ': ' + text(it.valueExpression, strings) }.join(', ')
    if (e instanceof ListExpression) return '[' + e.expressions.collect { text(it, strings) }.join(', ') + ']'
    if (e instanceof ClosureExpression) return '{}'
    return e.text
}

def args(Expression arguments, List strings) {
    if (arguments instanceof TupleExpression) return arguments.expressions.findAll { !(it instanceof ClosureExpression) }.collect { text(it, strings) }
    return [text(arguments, strings)]
}

def node(Statement st) {
    if (!(st instanceof ExpressionStatement)) return [header: st.getClass().simpleName, strings: [], line: st.lineNumber, block: false, children: []]
    def e = st.expression
    def strings = []
    if (e instanceof MethodCallExpression) {
        def closure = (e.arguments instanceof TupleExpression) ? e.arguments.expressions.find { it instanceof ClosureExpression } : null
        def a = args(e.arguments, strings)
        def header = closure ? e.methodAsString + (a ? '(' + a.join(', ') + ')' : '') : (e.methodAsString + ' ' + a.join(', ')).trim()
        def children = closure ? block(closure.code) : []
        return [header: header, strings: strings, line: st.lineNumber, block: closure != null, children: children]
    }
    if (e instanceof BinaryExpression) {
        return [header: text(e.leftExpression, strings) + ' = ' + text(e.rightExpression, strings), strings: strings, line: st.lineNumber, block: false, children: []]
    }
    return [header: text(e, strings), strings: strings, line: st.lineNumber, block: false, children: []]
}

def block(Statement code) {
    if (code instanceof BlockStatement) return code.statements.collect { node(it) }
    return [node(code)]
}

def results = [:]
for (path in args) {
    def unit = new CompilationUnit(new CompilerConfiguration())
    unit.addSource(new File(path))
    try {
        unit.compile(Phases.CONVERSION)
        def module = unit.AST.modules[0]
        results[path] = [errors: [], tree: block(module.statementBlock)]
    } catch (MultipleCompilationErrorsException e) {
        def out = new StringWriter()
        e.errorCollector.write(new PrintWriter(out), null)
        results[path] = [errors: [out.toString()], tree: []]
    }
}
println JsonOutput.toJson(results)
