//! Stacks shaped like a Spring/Netty Java service's, root first:
//! `Thread.run`, a thread-pool or server prefix many stacks share (Tomcat with
//! its servlet filters and Spring MVC, Netty/Reactor, an executor, a
//! scheduler), a path through a tree of application calls (stacks under the
//! same path share its frames; some calls go through a Spring transaction
//! proxy), then a library tail (Jackson, Hibernate and JDBC, streams, regex,
//! logging, TLS) whose recursion brings the stack to its drawn depth, and a
//! leaf. Depths are drawn from `MIN_DEPTH..=MAX_DEPTH` (triangular, mean ≈
//! 67); every stack is distinct. A frame's line and type follow from its name,
//! as one method's call site does across stacks.

use std::collections::HashSet;
use std::sync::Arc;

use javelin_agent::jfr_parse::{Frame, Frames};
use javelin_schema::wire::FrameType;

use super::rng::SplitMix64;

/// Stream tag (see `sampler`) of the stacks' draws.
const STACK_STREAM: u64 = 5;

pub const MIN_DEPTH: usize = 15;
pub const MAX_DEPTH: usize = 120;

/// Endpoints (controllers, tasks, jobs) the application tree starts from.
const ENDPOINTS: u64 = 24;
/// Callees per application call: the tree's fan-out.
const BRANCHING: u64 = 3;
/// Application calls before the library tail, whose recursion fills the
/// rest of the drawn depth.
const MIN_CALLS: u64 = 2;
const MAX_CALLS: u64 = 12;

/// How a thread gets into application code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    Tomcat,
    Netty,
    Executor,
    Scheduler,
}

static ENTRIES: [(Entry, u32); 4] = [
    (Entry::Tomcat, 55),
    (Entry::Netty, 20),
    (Entry::Executor, 15),
    (Entry::Scheduler, 10),
];

const TOMCAT: &[&str] = &[
    "org.apache.tomcat.util.threads.TaskThread$WrappingRunnable.run",
    "org.apache.tomcat.util.threads.ThreadPoolExecutor$Worker.run",
    "org.apache.tomcat.util.threads.ThreadPoolExecutor.runWorker",
    "org.apache.tomcat.util.net.SocketProcessorBase.run",
    "org.apache.tomcat.util.net.NioEndpoint$SocketProcessor.doRun",
    "org.apache.coyote.AbstractProtocol$ConnectionHandler.process",
    "org.apache.coyote.AbstractProcessorLight.process",
    "org.apache.coyote.http11.Http11Processor.service",
    "org.apache.catalina.connector.CoyoteAdapter.service",
    "org.apache.catalina.core.StandardEngineValve.invoke",
    "org.apache.catalina.valves.ErrorReportValve.invoke",
    "org.apache.catalina.core.StandardHostValve.invoke",
    "org.apache.catalina.authenticator.AuthenticatorBase.invoke",
    "org.apache.catalina.core.StandardContextValve.invoke",
    "org.apache.catalina.core.StandardWrapperValve.invoke",
];

/// After the filter chain: the servlet and Spring MVC's dispatch.
const SPRING_MVC: &[&str] = &[
    "jakarta.servlet.http.HttpServlet.service",
    "org.springframework.web.servlet.FrameworkServlet.service",
    "org.springframework.web.servlet.FrameworkServlet.processRequest",
    "org.springframework.web.servlet.DispatcherServlet.doService",
    "org.springframework.web.servlet.DispatcherServlet.doDispatch",
    "org.springframework.web.servlet.mvc.method.AbstractHandlerMethodAdapter.handle",
    "org.springframework.web.servlet.mvc.method.annotation.RequestMappingHandlerAdapter.handleInternal",
    "org.springframework.web.servlet.mvc.method.annotation.RequestMappingHandlerAdapter.invokeHandlerMethod",
    "org.springframework.web.servlet.mvc.method.annotation.ServletInvocableHandlerMethod.invokeAndHandle",
    "org.springframework.web.method.support.InvocableHandlerMethod.invokeForRequest",
    "org.springframework.web.method.support.InvocableHandlerMethod.doInvoke",
    "java.lang.reflect.Method.invoke",
    "jdk.internal.reflect.DirectMethodHandleAccessor.invoke",
];

const FILTERS: &[&str] = &[
    "org.springframework.web.filter.RequestContextFilter.doFilterInternal",
    "org.springframework.web.filter.FormContentFilter.doFilterInternal",
    "org.springframework.web.filter.CharacterEncodingFilter.doFilterInternal",
    "org.springframework.web.filter.ServerHttpObservationFilter.doFilterInternal",
    "org.springframework.security.web.FilterChainProxy.doFilterInternal",
    "org.springframework.web.filter.ForwardedHeaderFilter.doFilterInternal",
];

const NETTY: &[&str] = &[
    "io.netty.util.concurrent.FastThreadLocalRunnable.run",
    "io.netty.util.internal.ThreadExecutorMap$2.run",
    "io.netty.util.concurrent.SingleThreadEventExecutor$4.run",
    "io.netty.channel.nio.NioEventLoop.run",
    "io.netty.channel.nio.NioEventLoop.processSelectedKeys",
    "io.netty.channel.nio.NioEventLoop.processSelectedKeysOptimized",
    "io.netty.channel.nio.NioEventLoop.processSelectedKey",
    "io.netty.channel.nio.AbstractNioByteChannel$NioByteUnsafe.read",
    "io.netty.channel.DefaultChannelPipeline.fireChannelRead",
    "io.netty.channel.AbstractChannelHandlerContext.invokeChannelRead",
    "io.netty.handler.codec.ByteToMessageDecoder.channelRead",
    "io.netty.handler.codec.ByteToMessageDecoder.fireChannelRead",
    "io.netty.channel.AbstractChannelHandlerContext.fireChannelRead",
    "reactor.netty.http.server.HttpServerOperations.onInboundNext",
    "reactor.netty.http.server.HttpServerHandle.onStateChange",
    "reactor.core.publisher.MonoFlatMap$FlatMapMain.onNext",
];

const EXECUTOR: &[&str] = &[
    "java.util.concurrent.ThreadPoolExecutor$Worker.run",
    "java.util.concurrent.ThreadPoolExecutor.runWorker",
    "java.util.concurrent.CompletableFuture$AsyncSupply.run",
];

const SCHEDULER: &[&str] = &[
    "java.util.concurrent.ThreadPoolExecutor$Worker.run",
    "java.util.concurrent.ThreadPoolExecutor.runWorker",
    "java.util.concurrent.ScheduledThreadPoolExecutor$ScheduledFutureTask.run",
    "java.util.concurrent.FutureTask.runAndReset",
    "java.util.concurrent.Executors$RunnableAdapter.call",
    "org.springframework.scheduling.support.DelegatingErrorHandlingRunnable.run",
    "org.springframework.scheduling.support.ScheduledMethodRunnable.run",
    "java.lang.reflect.Method.invoke",
];

/// Between a caller and a `@Transactional` callee.
const TX_PROXY: &[&str] = &[
    "org.springframework.aop.framework.CglibAopProxy$DynamicAdvisedInterceptor.intercept",
    "org.springframework.aop.framework.ReflectiveMethodInvocation.proceed",
    "org.springframework.transaction.interceptor.TransactionInterceptor.invoke",
    "org.springframework.transaction.interceptor.TransactionAspectSupport.invokeWithinTransaction",
];

/// A library the application calls at the end of a stack: fixed frames on
/// the way in (`outer`), frames that recurse (repeated to bring the stack to
/// its depth), fixed frames on the way out (`inner`), and the leaves (name,
/// native).
struct Tail {
    outer: &'static [&'static str],
    cycle: &'static [&'static str],
    inner: &'static [&'static str],
    leaves: &'static [(&'static str, bool)],
}

impl Tail {
    /// Frames of the tail without recursion, leaf included.
    fn fixed(&self) -> usize {
        self.outer.len() + self.inner.len() + 1
    }
}

static TAILS: [(Tail, u32); 6] = [
    (
        // Serializing a response: nested beans and collections.
        Tail {
            outer: &[
                "com.fasterxml.jackson.databind.ObjectMapper.writeValueAsString",
                "com.fasterxml.jackson.databind.ObjectMapper._writeValueAndClose",
                "com.fasterxml.jackson.databind.ser.DefaultSerializerProvider.serializeValue",
                "com.fasterxml.jackson.databind.ser.DefaultSerializerProvider._serialize",
            ],
            cycle: &[
                "com.fasterxml.jackson.databind.ser.BeanSerializer.serialize",
                "com.fasterxml.jackson.databind.ser.std.BeanSerializerBase.serializeFields",
                "com.fasterxml.jackson.databind.ser.BeanPropertyWriter.serializeAsField",
                "com.fasterxml.jackson.databind.ser.std.CollectionSerializer.serialize",
                "com.fasterxml.jackson.databind.ser.std.CollectionSerializer.serializeContents",
            ],
            inner: &[],
            leaves: &[
                (
                    "com.fasterxml.jackson.core.json.WriterBasedJsonGenerator.writeString",
                    false,
                ),
                (
                    "com.fasterxml.jackson.core.json.WriterBasedJsonGenerator._writeString2",
                    false,
                ),
                (
                    "com.fasterxml.jackson.core.json.WriterBasedJsonGenerator.writeFieldName",
                    false,
                ),
                (
                    "com.fasterxml.jackson.core.io.NumberOutput.outputLong",
                    false,
                ),
                ("java.lang.String.getChars", false),
            ],
        },
        25,
    ),
    (
        // Loading an entity graph through Hibernate, down to the driver.
        Tail {
            outer: &[
                "org.springframework.data.jpa.repository.support.SimpleJpaRepository.findById",
                "org.hibernate.internal.SessionImpl.find",
            ],
            cycle: &[
                "org.hibernate.event.internal.DefaultLoadEventListener.onLoad",
                "org.hibernate.event.internal.DefaultLoadEventListener.doLoad",
                "org.hibernate.loader.ast.internal.SingleIdEntityLoaderStandardImpl.load",
                "org.hibernate.sql.results.graph.entity.internal.EntityInitializerImpl.initializeInstance",
                "org.hibernate.type.EntityType.resolve",
                "org.hibernate.internal.SessionImpl.internalLoad",
            ],
            inner: &[
                "org.hibernate.sql.exec.internal.JdbcSelectExecutorStandardImpl.list",
                "org.hibernate.sql.exec.internal.JdbcSelectExecutorStandardImpl.executeQuery",
                "org.hibernate.sql.results.jdbc.internal.DeferredResultSetAccess.executeQuery",
                "com.zaxxer.hikari.pool.HikariProxyPreparedStatement.executeQuery",
                "com.zaxxer.hikari.pool.ProxyPreparedStatement.executeQuery",
                "org.postgresql.jdbc.PgPreparedStatement.executeQuery",
                "org.postgresql.jdbc.PgPreparedStatement.executeWithFlags",
                "org.postgresql.jdbc.PgStatement.executeInternal",
                "org.postgresql.core.v3.QueryExecutorImpl.execute",
                "org.postgresql.core.v3.QueryExecutorImpl.processResults",
            ],
            leaves: &[
                ("org.postgresql.core.PGStream.receiveTupleV3", false),
                (
                    "org.postgresql.core.VisibleBufferedInputStream.readMore",
                    false,
                ),
                ("org.postgresql.jdbc.PgResultSet.getString", false),
                ("sun.nio.ch.SocketDispatcher.read0", true),
            ],
        },
        25,
    ),
    (
        // Stream pipelines nested in stream pipelines.
        Tail {
            outer: &["java.util.stream.ReferencePipeline.collect"],
            cycle: &[
                "java.util.stream.AbstractPipeline.evaluate",
                "java.util.stream.ReduceOps$ReduceOp.evaluateSequential",
                "java.util.stream.AbstractPipeline.wrapAndCopyInto",
                "java.util.stream.AbstractPipeline.copyInto",
                "java.util.ArrayList$ArrayListSpliterator.forEachRemaining",
                "java.util.stream.ReferencePipeline$3$1.accept",
            ],
            inner: &[],
            leaves: &[
                ("java.util.HashMap.putVal", false),
                ("java.util.HashMap.resize", false),
                ("java.lang.String.hashCode", false),
                ("java.util.ArrayList.grow", false),
                ("java.math.BigDecimal.add", false),
                ("java.math.BigDecimal.multiply", false),
                ("java.lang.StringLatin1.equals", false),
            ],
        },
        20,
    ),
    (
        // A regular expression's backtracking.
        Tail {
            outer: &[
                "java.util.regex.Matcher.matches",
                "java.util.regex.Matcher.match",
                "java.util.regex.Pattern$Start.match",
            ],
            cycle: &[
                "java.util.regex.Pattern$GroupHead.match",
                "java.util.regex.Pattern$Loop.match",
                "java.util.regex.Pattern$Branch.match",
                "java.util.regex.Pattern$CharPropertyGreedy.match",
            ],
            inner: &[],
            leaves: &[
                ("java.util.regex.Pattern$BmpCharProperty.match", false),
                ("java.util.regex.Pattern$CharProperty.match", false),
                ("java.util.regex.Pattern$Slice.match", false),
            ],
        },
        10,
    ),
    (
        // Logging through nested pattern converters.
        Tail {
            outer: &[
                "ch.qos.logback.classic.Logger.info",
                "ch.qos.logback.classic.Logger.filterAndLog_1",
                "ch.qos.logback.classic.Logger.buildLoggingEventAndAppend",
                "ch.qos.logback.classic.Logger.callAppenders",
                "ch.qos.logback.core.spi.AppenderAttachableImpl.appendLoopOnAppenders",
                "ch.qos.logback.core.UnsynchronizedAppenderBase.doAppend",
                "ch.qos.logback.core.OutputStreamAppender.subAppend",
                "ch.qos.logback.core.encoder.LayoutWrappingEncoder.encode",
                "ch.qos.logback.core.pattern.PatternLayoutBase.writeLoopOnConverters",
            ],
            cycle: &[
                "ch.qos.logback.core.pattern.FormattingConverter.write",
                "ch.qos.logback.core.pattern.CompositeConverter.convert",
            ],
            inner: &[],
            leaves: &[
                (
                    "ch.qos.logback.classic.pattern.DateConverter.convert",
                    false,
                ),
                (
                    "ch.qos.logback.classic.pattern.MessageConverter.convert",
                    false,
                ),
                ("java.lang.AbstractStringBuilder.append", false),
                ("java.io.FileOutputStream.writeBytes", true),
            ],
        },
        10,
    ),
    (
        // An outgoing HTTPS call through the client's interceptors.
        Tail {
            outer: &[
                "org.springframework.web.client.RestTemplate.exchange",
                "org.springframework.web.client.RestTemplate.doExecute",
                "org.springframework.http.client.AbstractClientHttpRequest.execute",
            ],
            cycle: &[
                "org.springframework.http.client.InterceptingClientHttpRequest$InterceptingRequestExecution.execute",
                "org.springframework.http.client.observation.ObservationClientHttpRequestInterceptor.intercept",
            ],
            inner: &[
                "org.springframework.http.client.SimpleClientHttpRequest.executeInternal",
                "sun.net.www.protocol.https.HttpsURLConnectionImpl.getInputStream",
                "sun.net.www.protocol.http.HttpURLConnection.getInputStream0",
                "sun.security.ssl.SSLSocketImpl$AppInputStream.read",
                "sun.security.ssl.SSLSocketImpl.readApplicationRecord",
                "sun.security.ssl.SSLTransport.decode",
                "javax.crypto.Cipher.doFinal",
                "com.sun.crypto.provider.GaloisCounterMode.engineDoFinal",
            ],
            leaves: &[
                ("com.sun.crypto.provider.GHASH.processBlocks", false),
                ("com.sun.crypto.provider.AESCrypt.implEncryptBlock", false),
                ("com.sun.crypto.provider.GCTR.doFinal", false),
            ],
        },
        10,
    ),
];

const AREAS: &[&str] = &[
    "order",
    "cart",
    "catalog",
    "pricing",
    "inventory",
    "payment",
    "customer",
    "shipping",
    "search",
    "promotion",
    "review",
    "recommendation",
];
const LAYERS: &[(&str, &str)] = &[
    ("service", "Service"),
    ("service", "ServiceImpl"),
    ("domain", "Policy"),
    ("domain", "Calculator"),
    ("mapping", "Mapper"),
    ("validation", "Validator"),
    ("persistence", "Repository"),
    ("client", "Client"),
    ("cache", "Cache"),
    ("app", "Facade"),
];
const VERBS: &[&str] = &[
    "find", "load", "compute", "apply", "validate", "build", "resolve", "update", "merge", "to",
];
const NOUNS: &[&str] = &[
    "Order",
    "Lines",
    "Totals",
    "Discounts",
    "Stock",
    "Customer",
    "Quote",
    "Rates",
    "Items",
    "Details",
    "Summary",
    "Offers",
];

/// The synthetic stacks of a run: `count` distinct stacks, the same for a seed.
pub fn build(count: usize, seed: u64) -> Vec<Frames> {
    let mut seen: HashSet<Vec<Frame>> = HashSet::with_capacity(count);
    let mut out = Vec::with_capacity(count);
    for k in 0..count as u64 {
        let mut frames = Vec::new();
        for attempt in 0..1000 {
            frames = stack(&mut SplitMix64::derived(seed, &[STACK_STREAM, k, attempt]));
            if !seen.contains(&frames) {
                break;
            }
        }
        if seen.contains(&frames) {
            // Never seen in practice; keeps the stacks distinct whatever the seed.
            frames.push(frame(&format!("com.acme.shop.work.Task{k}.run"), None));
        }
        seen.insert(frames.clone());
        out.push(Frames::from(frames));
    }
    out
}

/// One stack of the drawn depth.
fn stack(rng: &mut SplitMix64) -> Vec<Frame> {
    // Triangular: the mean of two uniform draws.
    let span = (MAX_DEPTH - MIN_DEPTH) as u64;
    let depth = MIN_DEPTH + ((rng.between(0, span) + rng.between(0, span)) / 2) as usize;
    let tail = rng.weighted(&TAILS);
    let endpoint = rng.below(ENDPOINTS);
    // Only entries that leave room for the first application call and the tail.
    let fitting: Vec<(Entry, u32)> = ENTRIES
        .iter()
        .copied()
        .filter(|&(e, _)| head(e, endpoint).len() + 1 + tail.fixed() <= depth)
        .collect();
    let entry = if fitting.is_empty() {
        Entry::Executor
    } else {
        *rng.weighted(&fitting)
    };
    let mut names: Vec<String> = head(entry, endpoint);
    let calls = rng.between(MIN_CALLS, MAX_CALLS);
    let mut node = fnv(&[entry as u64, endpoint]);
    for level in 0..calls {
        let room = depth.saturating_sub(names.len() + tail.fixed());
        if room == 0 {
            break;
        }
        names.extend(app_call(node, level, entry, room));
        node = fnv(&[node, rng.below(BRANCHING)]);
    }
    let recursion = depth.saturating_sub(names.len() + tail.fixed());
    names.extend(tail.outer.iter().map(|s| s.to_string()));
    names.extend(
        tail.cycle
            .iter()
            .cycle()
            .take(recursion)
            .map(|s| s.to_string()),
    );
    names.extend(tail.inner.iter().map(|s| s.to_string()));
    let (leaf, native) = tail.leaves[rng.below(tail.leaves.len() as u64) as usize];
    let mut frames: Vec<Frame> = names.iter().map(|n| frame(n, None)).collect();
    let line = rng.between(1, 400) as i32;
    frames.push(frame(leaf, Some((line, native))));
    frames
}

/// `Thread.run` and the entry's frames up to application code.
fn head(entry: Entry, endpoint: u64) -> Vec<String> {
    let mut names = vec!["java.lang.Thread.run".to_string()];
    let own = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    match entry {
        Entry::Tomcat => {
            names.extend(own(TOMCAT));
            // Each endpoint passes the filters its URL pattern maps (2..=6).
            for &filter in FILTERS.iter().take(2 + (endpoint % 5) as usize) {
                names.extend(own(&[
                    "org.apache.catalina.core.ApplicationFilterChain.doFilter",
                    "org.apache.catalina.core.ApplicationFilterChain.internalDoFilter",
                    "org.springframework.web.filter.OncePerRequestFilter.doFilter",
                    filter,
                ]));
            }
            names.extend(own(SPRING_MVC));
        }
        Entry::Netty => names.extend(own(NETTY)),
        Entry::Executor => names.extend(own(EXECUTOR)),
        Entry::Scheduler => names.extend(own(SCHEDULER)),
    }
    names
}

/// The frames of one application call at tree node `node`: the method, behind
/// a transaction proxy for one callee in four when `room` allows.
fn app_call(node: u64, level: u64, entry: Entry, room: usize) -> Vec<String> {
    let area = AREAS[(node % AREAS.len() as u64) as usize];
    let class_area = capitalized(area);
    let method = format!(
        "{}{}",
        VERBS[((node >> 8) % VERBS.len() as u64) as usize],
        NOUNS[((node >> 16) % NOUNS.len() as u64) as usize]
    );
    if level == 0 {
        let name = match entry {
            Entry::Tomcat | Entry::Netty => {
                format!("com.acme.shop.{area}.api.{class_area}Controller.{method}")
            }
            Entry::Executor => format!("com.acme.shop.{area}.async.{class_area}Worker.run"),
            Entry::Scheduler => format!("com.acme.shop.{area}.jobs.{class_area}SyncJob.run"),
        };
        return vec![name];
    }
    let (package, role) = LAYERS[((node >> 24) % LAYERS.len() as u64) as usize];
    let class = format!("com.acme.shop.{area}.{package}.{class_area}{role}");
    let proxied = (node >> 32).is_multiple_of(4) && room > TX_PROXY.len() + 1;
    let mut names = Vec::new();
    if proxied {
        names.push(format!("{class}$$SpringCGLIB$$0.{method}"));
        names.extend(TX_PROXY.iter().map(|s| s.to_string()));
    }
    names.push(format!("{class}.{method}"));
    names
}

fn capitalized(s: &str) -> String {
    let mut chars = s.chars();
    chars
        .next()
        .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
        .unwrap_or_default()
}

/// A frame; its line and type follow from its name (one call site per
/// method), except a leaf's line and a native leaf's type.
fn frame(name: &str, leaf: Option<(i32, bool)>) -> Frame {
    let h = fnv_str(name);
    let kind = match (leaf, h % 50) {
        (Some((_, true)), _) => FrameType::Native,
        (_, 0) => FrameType::Interpreted,
        (_, 1..=4) => FrameType::C1,
        (_, 5..=14) => FrameType::Inlined,
        _ => FrameType::Jit,
    };
    Frame {
        name: Arc::from(name),
        line: leaf.map_or(((h >> 8) % 1200) as i32 + 1, |(line, _)| line),
        kind: kind as i32,
    }
}

/// FNV-1a over 64-bit words: a hash that is the same on every build.
fn fnv(words: &[u64]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for w in words {
        for b in w.to_le_bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

fn fnv_str(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stacks_are_distinct_deep_and_share_their_upper_frames() {
        let stacks = build(1500, 42);
        assert_eq!(stacks.len(), 1500);
        let distinct: HashSet<&[Frame]> = stacks.iter().map(|s| &s[..]).collect();
        assert_eq!(distinct.len(), 1500);
        for s in &stacks {
            assert!(
                (MIN_DEPTH..=MAX_DEPTH).contains(&s.len()),
                "depth {}",
                s.len()
            );
            assert_eq!(&*s[0].name, "java.lang.Thread.run");
        }
        let mean = stacks.iter().map(|s| s.len()).sum::<usize>() as f64 / 1500.0;
        assert!((50.0..85.0).contains(&mean), "mean depth {mean}");
        // Far fewer distinct frames than frames: upper layers are shared.
        let frames: usize = stacks.iter().map(|s| s.len()).sum();
        let names: HashSet<&str> = stacks
            .iter()
            .flat_map(|s| s.iter().map(|f| &*f.name))
            .collect();
        assert!(names.len() * 10 < frames, "{} names", names.len());
        let leaves: HashSet<&str> = stacks
            .iter()
            .filter_map(|s| s.last())
            .map(|f| &*f.name)
            .collect();
        assert!(leaves.len() > 10);
    }

    #[test]
    fn the_same_seed_builds_the_same_stacks() {
        assert_eq!(build(50, 1), build(50, 1));
        assert_ne!(build(50, 1), build(50, 2));
    }
}
