import java.io.ByteArrayOutputStream;
import java.math.BigDecimal;
import java.math.RoundingMode;
import java.net.URLDecoder;
import java.net.URLEncoder;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Random;
import java.util.SplittableRandom;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.locks.ReentrantLock;

/**
 * Javelin's demo workload: the backend of a small web shop, in one JVM and on
 * the JDK alone. Request threads take simulated HTTP requests of three kinds
 * through a few layers, so every profile type has a story to tell:
 *
 * <pre>
 * RequestHandler.run
 *   RequestParser.parse                     request line, headers, cookies, query and form
 *   Router.handle
 *     search    (50 %) SearchService.search → LruCache.get → Tokenizer.tokenize
 *                      → SearchIndex.score (BM25 over the catalog: the CPU hot spot)
 *                      → JsonWriter.write
 *     checkout  (30 %) CheckoutService.checkout → PricingService.price (BigDecimal)
 *                      → PromotionRule.matches (5000 rules, all checked every time)
 *                      → InventoryService.reserve (synchronized, writes the stock
 *                        ledger while holding the monitor: the lock hot spot)
 *                      → OrderRepository.save → Database.execute (one connection
 *                        behind a ReentrantLock: the park hot spot)
 *     report    (20 %) ReportService.daily → OrderRepository.findByDay → Database.execute
 *                      → CsvWriter.writeRow (a fresh 8 KiB buffer per row: the
 *                        allocation hot spot)
 *                      → ReportService.recomputeTotals, only while the totals cache
 *                        is stale: every other phase (odd minutes of the clock by
 *                        default), so a diff of two adjacent minutes shows it
 *   ResponseWriter.write
 * </pre>
 *
 * CPU use is bounded: each request thread waits a think time between requests,
 * and the slow I/O is simulated with sleeps. System properties (defaults):
 * {@code javelin.demo.workers} (4) request threads, {@code javelin.demo.think.millis}
 * (10) between requests, {@code javelin.demo.phase.seconds} (60) per totals-cache
 * phase. The only output is the first line, {@code javelin-demo pid <pid>}.
 */
public final class JavelinDemo {
    public static void main(String[] args) throws InterruptedException {
        System.out.println("javelin-demo pid " + ProcessHandle.current().pid());
        System.out.flush();
        int workers = Math.max(1, Integer.getInteger("javelin.demo.workers", 4));
        long think = Math.max(0, Long.getLong("javelin.demo.think.millis", 10));
        long phase = Math.max(1, Long.getLong("javelin.demo.phase.seconds", 60));
        Router router = Router.create(new Phase(phase * 1000));
        for (int i = 0; i < workers; i++) {
            Thread t = new Thread(new RequestHandler(router, new TrafficGenerator(i, think)),
                    "http-worker-" + i);
            t.setDaemon(true);
            t.start();
        }
        Thread.currentThread().join();
    }
}

/** A request thread: takes the next request, handles it, writes the response. */
final class RequestHandler implements Runnable {
    static final AtomicLong ERRORS = new AtomicLong();
    static volatile long bytesSent;
    private final Router router;
    private final TrafficGenerator traffic;

    RequestHandler(Router router, TrafficGenerator traffic) {
        this.router = router;
        this.traffic = traffic;
    }

    @Override
    public void run() {
        while (!Thread.currentThread().isInterrupted()) {
            String raw = traffic.next();
            try {
                Request request = RequestParser.parse(raw);
                Response response = router.handle(request);
                bytesSent += ResponseWriter.write(response).length;
            } catch (RuntimeException e) {
                // A 500 for the client; the demo's only output is its first line.
                ERRORS.incrementAndGet();
            }
        }
    }
}

/** The simulated clients: raw HTTP/1.1 requests, with a think time before each. */
final class TrafficGenerator {
    private static final String[] AGENTS = {
        "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15",
        "shop-ios/4.12.0 (iPhone; iOS 17.5.1; Scale/3.00)",
    };
    private final SplittableRandom random;
    private final long thinkMillis;
    private final String[] queries;

    TrafficGenerator(int seed, long thinkMillis) {
        this.random = new SplittableRandom(seed * 7919L + 17);
        this.thinkMillis = thinkMillis;
        this.queries = Catalog.popularQueries(400);
    }

    String next() {
        Downstream.pause(thinkMillis);
        int kind = random.nextInt(100);
        if (kind < 50) {
            return search();
        }
        if (kind < 80) {
            return checkout();
        }
        return report();
    }

    /** Zipf-like: a few queries are asked most of the time. */
    private String search() {
        double u = random.nextDouble();
        String q = queries[(int) (queries.length * u * u * u)];
        String target = "/search?q=" + q.replace(' ', '+') + "&page=" + (1 + random.nextInt(3))
                + "&sort=relevance";
        return head("GET", target) + "\r\n";
    }

    private String checkout() {
        StringBuilder items = new StringBuilder();
        int lines = 1 + random.nextInt(4);
        for (int i = 0; i < lines; i++) {
            if (i > 0) {
                items.append(',');
            }
            items.append(Catalog.sku(random.nextInt(Catalog.PRODUCTS))).append(':')
                    .append(1 + random.nextInt(3));
        }
        String body = "items=" + URLEncoder.encode(items.toString(), StandardCharsets.UTF_8)
                + (random.nextInt(4) == 0 ? "&coupon=SPRING10" : "") + "&payment=card";
        return head("POST", "/checkout")
                + "Content-Type: application/x-www-form-urlencoded\r\n"
                + "Content-Length: " + body.length() + "\r\n\r\n" + body;
    }

    private String report() {
        int day = 1 + random.nextInt(28);
        return head("GET", "/reports/daily?day=2024-05-" + (day < 10 ? "0" : "") + day + "&format=csv")
                + "\r\n";
    }

    private String head(String method, String target) {
        return method + " " + target + " HTTP/1.1\r\n"
                + "Host: shop.example.com\r\n"
                + "User-Agent: " + AGENTS[random.nextInt(AGENTS.length)] + "\r\n"
                + "Accept: application/json, text/csv;q=0.9, */*;q=0.8\r\n"
                + "Accept-Language: en-US,en;q=0.7,de;q=0.3\r\n"
                + "Accept-Encoding: gzip, deflate, br\r\n"
                + "Cookie: session=" + Long.toHexString(random.nextLong()) + "; cart="
                + Long.toHexString(random.nextLong()) + "; consent=analytics%3Dno%2Cads%3Dno; locale=en-US; "
                + "recently_viewed=" + Catalog.sku(random.nextInt(Catalog.PRODUCTS)) + "%2C"
                + Catalog.sku(random.nextInt(Catalog.PRODUCTS)) + "; ab=checkout-v2%3Dcontrol\r\n"
                + "Sec-Ch-Ua: \"Chromium\";v=\"126\", \"Not.A/Brand\";v=\"24\"\r\n"
                + "Sec-Ch-Ua-Platform: \"Linux\"\r\nDnt: 1\r\nPriority: u=1, i\r\n"
                + "X-Request-Id: " + Long.toHexString(random.nextLong()) + Long.toHexString(random.nextLong())
                + "\r\n"
                + "X-Forwarded-For: 10." + random.nextInt(256) + "." + random.nextInt(256) + "."
                + random.nextInt(256) + "\r\n"
                + "Traceparent: 00-" + Long.toHexString(random.nextLong()) + Long.toHexString(random.nextLong())
                + "-" + Long.toHexString(random.nextLong()) + "-01\r\n"
                + "Referer: https://shop.example.com/?utm_source=newsletter&utm_medium=email\r\n"
                + "Sec-Fetch-Mode: cors\r\nSec-Fetch-Site: same-origin\r\nConnection: keep-alive\r\n";
    }
}

/** A parsed request. */
final class Request {
    final String method;
    final String path;
    final Map<String, String> params;
    final Map<String, String> headers;
    final Map<String, String> cookies;

    Request(String method, String path, Map<String, String> params, Map<String, String> headers,
            Map<String, String> cookies) {
        this.method = method;
        this.path = path;
        this.params = params;
        this.headers = headers;
        this.cookies = cookies;
    }

    String param(String name, String fallback) {
        return params.getOrDefault(name, fallback);
    }
}

/** HTTP/1.1 request parsing: request line, headers, cookies, query string and form body. */
final class RequestParser {
    static Request parse(String raw) {
        int end = raw.indexOf("\r\n\r\n");
        if (end < 0) {
            throw new IllegalArgumentException("no end of headers");
        }
        String[] lines = raw.substring(0, end).split("\r\n");
        String[] requestLine = lines[0].split(" ");
        if (requestLine.length != 3 || !requestLine[2].startsWith("HTTP/")) {
            throw new IllegalArgumentException("bad request line");
        }
        Map<String, String> headers = new HashMap<>();
        for (int i = 1; i < lines.length; i++) {
            int colon = lines[i].indexOf(':');
            if (colon <= 0) {
                throw new IllegalArgumentException("bad header");
            }
            headers.put(lines[i].substring(0, colon).trim().toLowerCase(Locale.ROOT),
                    lines[i].substring(colon + 1).trim());
        }
        String target = requestLine[1];
        int question = target.indexOf('?');
        String path = question < 0 ? target : target.substring(0, question);
        Map<String, String> params = question < 0 ? new HashMap<>() : parseQuery(target.substring(question + 1));
        String body = raw.substring(end + 4);
        if (!body.isEmpty()
                && "application/x-www-form-urlencoded".equals(headers.get("content-type"))) {
            params.putAll(parseQuery(body));
        }
        return new Request(requestLine[0], path, params, headers,
                parseCookies(headers.getOrDefault("cookie", "")));
    }

    static Map<String, String> parseQuery(String query) {
        Map<String, String> params = new HashMap<>();
        for (String pair : query.split("&")) {
            int eq = pair.indexOf('=');
            if (eq > 0) {
                params.put(URLDecoder.decode(pair.substring(0, eq), StandardCharsets.UTF_8),
                        URLDecoder.decode(pair.substring(eq + 1), StandardCharsets.UTF_8));
            }
        }
        return params;
    }

    static Map<String, String> parseCookies(String header) {
        Map<String, String> cookies = new HashMap<>();
        for (String part : header.split(";")) {
            int eq = part.indexOf('=');
            if (eq > 0) {
                cookies.put(part.substring(0, eq).trim(),
                        URLDecoder.decode(part.substring(eq + 1).trim(), StandardCharsets.UTF_8));
            }
        }
        return cookies;
    }
}

/** A response: status, content type and body. */
final class Response {
    final int status;
    final String contentType;
    final List<byte[]> body;

    Response(int status, String contentType, List<byte[]> body) {
        this.status = status;
        this.contentType = contentType;
        this.body = body;
    }

    static Response json(int status, String json) {
        return new Response(status, "application/json", List.of(json.getBytes(StandardCharsets.UTF_8)));
    }
}

/** Writes a response as HTTP/1.1 bytes. */
final class ResponseWriter {
    static byte[] write(Response response) {
        int length = 0;
        for (byte[] chunk : response.body) {
            length += chunk.length;
        }
        String head = "HTTP/1.1 " + response.status + (response.status == 200 ? " OK" : " Error") + "\r\n"
                + "Content-Type: " + response.contentType + "\r\n"
                + "Content-Length: " + length + "\r\n"
                + "Cache-Control: no-store\r\n\r\n";
        ByteArrayOutputStream out = new ByteArrayOutputStream(head.length() + length);
        out.writeBytes(head.getBytes(StandardCharsets.US_ASCII));
        for (byte[] chunk : response.body) {
            out.writeBytes(chunk);
        }
        return out.toByteArray();
    }
}

/** Dispatches requests to the services by path. */
final class Router {
    private final SearchService search;
    private final CheckoutService checkout;
    private final ReportService reports;

    private Router(SearchService search, CheckoutService checkout, ReportService reports) {
        this.search = search;
        this.checkout = checkout;
        this.reports = reports;
    }

    static Router create(Phase phase) {
        Catalog catalog = new Catalog();
        Tokenizer tokenizer = new Tokenizer(Catalog.VOCABULARY);
        Database database = new Database();
        OrderRepository orders = new OrderRepository(database, catalog);
        return new Router(
                new SearchService(catalog, tokenizer, new SearchIndex(catalog)),
                new CheckoutService(catalog, new PricingService(catalog), new InventoryService(),
                        orders),
                new ReportService(orders, phase));
    }

    Response handle(Request request) {
        switch (request.path) {
            case "/search":
                return search.search(request);
            case "/checkout":
                if (!"POST".equals(request.method)) {
                    return Response.json(405, "{\"error\":\"method not allowed\"}");
                }
                return checkout.checkout(request);
            case "/reports/daily":
                return reports.daily(request);
            default:
                return Response.json(404, "{\"error\":\"not found\"}");
        }
    }
}

/** The product catalog, generated deterministically at start. */
final class Catalog {
    static final int PRODUCTS = 16_000;
    static final String[] CATEGORIES = {
        "outerwear", "shoes", "bags", "knitwear", "shirts", "trousers", "accessories", "home",
    };
    static final String[] VOCABULARY = (
            "red blue green black white grey navy olive beige brown orange yellow pink purple "
            + "wool cotton linen leather suede denim canvas silk cashmere fleece nylon recycled "
            + "jacket coat parka boots sneakers loafers sandals backpack tote wallet sweater "
            + "cardigan hoodie shirt blouse tshirt jeans chinos shorts scarf beanie gloves belt "
            + "lamp blanket cushion mug vase candle rug towel slim relaxed classic vintage "
            + "waterproof lightweight warm organic handmade limited essential premium everyday "
            + "travel outdoor winter summer spring autumn kids women men unisex oversized cropped "
            + "padded quilted knitted woven printed striped checked plain").split(" ");

    final String[] skus = new String[PRODUCTS];
    final String[] titles = new String[PRODUCTS];
    final String[] descriptions = new String[PRODUCTS];
    /** Each product's title and description words, as indexes into {@link #VOCABULARY}. */
    final int[][] titleWords = new int[PRODUCTS][];
    final int[][] descriptionWords = new int[PRODUCTS][];
    final int[] categories = new int[PRODUCTS];
    final long[] priceCents = new long[PRODUCTS];

    Catalog() {
        Random random = new Random(42);
        for (int i = 0; i < PRODUCTS; i++) {
            skus[i] = sku(i);
            titleWords[i] = words(random, 3 + random.nextInt(3));
            descriptionWords[i] = words(random, 10 + random.nextInt(8));
            titles[i] = text(titleWords[i]);
            descriptions[i] = text(descriptionWords[i]);
            categories[i] = random.nextInt(CATEGORIES.length);
            priceCents[i] = 499 + random.nextInt(30_000);
        }
    }

    static String sku(int index) {
        String digits = Integer.toString(index);
        return "SKU-" + "00000".substring(digits.length()) + digits;
    }

    static int index(String sku) {
        return Integer.parseInt(sku.substring(4));
    }

    private static int[] words(Random random, int count) {
        int[] words = new int[count];
        for (int i = 0; i < count; i++) {
            // Skewed: some words are far more common than others (idf matters).
            double u = random.nextDouble();
            words[i] = (int) (VOCABULARY.length * u * u);
        }
        return words;
    }

    private static String text(int[] words) {
        StringBuilder text = new StringBuilder();
        for (int word : words) {
            if (text.length() > 0) {
                text.append(' ');
            }
            text.append(VOCABULARY[word]);
        }
        return text.toString();
    }

    static String[] popularQueries(int count) {
        Random random = new Random(7);
        String[] queries = new String[count];
        for (int i = 0; i < count; i++) {
            queries[i] = text(words(random, 1 + random.nextInt(3)));
        }
        return queries;
    }
}

/** Lower-cases and splits text into term ids (indexes into the vocabulary). */
final class Tokenizer {
    private final Map<String, Integer> ids = new HashMap<>();

    Tokenizer(String[] vocabulary) {
        for (String word : vocabulary) {
            ids.putIfAbsent(word, ids.size());
        }
    }

    int[] tokenize(String text) {
        int[] out = new int[8];
        int n = 0;
        int start = -1;
        for (int i = 0; i <= text.length(); i++) {
            boolean letter = i < text.length() && Character.isLetterOrDigit(text.charAt(i));
            if (letter && start < 0) {
                start = i;
            } else if (!letter && start >= 0) {
                Integer id = ids.get(text.substring(start, i).toLowerCase(Locale.ROOT));
                if (id != null) {
                    if (n == out.length) {
                        out = Arrays.copyOf(out, n * 2);
                    }
                    out[n++] = id;
                }
                start = -1;
            }
        }
        return Arrays.copyOf(out, n);
    }
}

/** Documents found by a query, best first. */
final class Hits {
    final int[] docs;
    final float[] scores;

    Hits(int[] docs, float[] scores) {
        this.docs = docs;
        this.scores = scores;
    }
}

/** The search index: every product's sorted term ids and term frequencies. */
final class SearchIndex {
    private static final float K1 = 1.2f;
    private static final float B = 0.75f;
    private final int[][] terms;
    private final byte[][] freqs;
    private final float[] idf;
    private final float averageLength;

    SearchIndex(Catalog catalog) {
        int n = Catalog.PRODUCTS;
        terms = new int[n][];
        freqs = new byte[n][];
        int[] documentFrequency = new int[Catalog.VOCABULARY.length];
        long totalLength = 0;
        for (int doc = 0; doc < n; doc++) {
            // The title counts twice.
            int[] title = catalog.titleWords[doc];
            int[] description = catalog.descriptionWords[doc];
            int[] tokens = new int[2 * title.length + description.length];
            System.arraycopy(title, 0, tokens, 0, title.length);
            System.arraycopy(title, 0, tokens, title.length, title.length);
            System.arraycopy(description, 0, tokens, 2 * title.length, description.length);
            totalLength += tokens.length;
            Arrays.sort(tokens);
            int distinct = 0;
            int[] t = new int[tokens.length];
            int[] f = new int[tokens.length];
            for (int i = 0; i < tokens.length; i++) {
                if (distinct > 0 && t[distinct - 1] == tokens[i]) {
                    f[distinct - 1]++;
                } else {
                    t[distinct] = tokens[i];
                    f[distinct++] = 1;
                    documentFrequency[tokens[i]]++;
                }
            }
            terms[doc] = Arrays.copyOf(t, distinct);
            freqs[doc] = new byte[distinct];
            for (int i = 0; i < distinct; i++) {
                freqs[doc][i] = (byte) Math.min(f[i], Byte.MAX_VALUE);
            }
        }
        averageLength = (float) totalLength / n;
        idf = new float[documentFrequency.length];
        for (int term = 0; term < idf.length; term++) {
            double df = documentFrequency[term];
            idf[term] = (float) Math.log(1 + (n - df + 0.5) / (df + 0.5));
        }
    }

    /**
     * BM25 of every document for the query, keeping the best {@code limit}:
     * a full scan, so the search path's CPU goes here.
     */
    Hits score(int[] query, int limit) {
        int[] best = new int[limit];
        float[] bestScore = new float[limit];
        int found = 0;
        for (int doc = 0; doc < terms.length; doc++) {
            int[] t = terms[doc];
            float lengthNorm = K1 * (1 - B + B * t.length / averageLength);
            float score = 0;
            for (int q : query) {
                int lo = 0;
                int hi = t.length - 1;
                while (lo <= hi) {
                    int mid = (lo + hi) >>> 1;
                    if (t[mid] < q) {
                        lo = mid + 1;
                    } else if (t[mid] > q) {
                        hi = mid - 1;
                    } else {
                        float tf = freqs[doc][mid];
                        score += idf[q] * tf * (K1 + 1) / (tf + lengthNorm);
                        break;
                    }
                }
            }
            if (score > 0 && (found < limit || score > bestScore[limit - 1])) {
                int i = Math.min(found, limit - 1);
                while (i > 0 && bestScore[i - 1] < score) {
                    best[i] = best[i - 1];
                    bestScore[i] = bestScore[i - 1];
                    i--;
                }
                best[i] = doc;
                bestScore[i] = score;
                if (found < limit) {
                    found++;
                }
            }
        }
        return new Hits(Arrays.copyOf(best, found), Arrays.copyOf(bestScore, found));
    }
}

/**
 * A least-recently-used cache of rendered responses. Each request thread has
 * its own (no lock on the hot path), so a popular query is computed once per thread.
 */
final class LruCache<K, V> extends LinkedHashMap<K, V> {
    private final int capacity;

    LruCache(int capacity) {
        super(capacity * 2, 0.75f, true);
        this.capacity = capacity;
    }

    /** A hit moves the entry to the most recently used end. */
    @Override
    public V get(Object key) {
        return super.get(key);
    }

    @Override
    protected boolean removeEldestEntry(Map.Entry<K, V> eldest) {
        return size() > capacity;
    }
}

/** GET /search: tokenize, score, render the page of hits as JSON; cached per thread. */
final class SearchService {
    private static final int PAGE = 50;
    private final Catalog catalog;
    private final Tokenizer tokenizer;
    private final SearchIndex index;
    private final ThreadLocal<LruCache<String, String>> cache =
            ThreadLocal.withInitial(() -> new LruCache<>(24));

    SearchService(Catalog catalog, Tokenizer tokenizer, SearchIndex index) {
        this.catalog = catalog;
        this.tokenizer = tokenizer;
        this.index = index;
    }

    Response search(Request request) {
        String q = request.param("q", "");
        int page = Math.max(1, Integer.parseInt(request.param("page", "1")));
        String key = q + "|" + page;
        LruCache<String, String> rendered = cache.get();
        String json = rendered.get(key);
        if (json == null) {
            json = render(q, page, index.score(tokenizer.tokenize(q), PAGE * page));
            rendered.put(key, json);
        }
        return Response.json(200, json);
    }

    private String render(String q, int page, Hits hits) {
        List<Object> results = new ArrayList<>();
        for (int i = (page - 1) * PAGE; i < hits.docs.length; i++) {
            int doc = hits.docs[i];
            Map<String, Object> hit = new LinkedHashMap<>();
            hit.put("sku", catalog.skus[doc]);
            hit.put("title", catalog.titles[doc]);
            hit.put("category", Catalog.CATEGORIES[catalog.categories[doc]]);
            hit.put("price", BigDecimal.valueOf(catalog.priceCents[doc], 2).toPlainString());
            hit.put("score", hits.scores[i]);
            hit.put("snippet", catalog.descriptions[doc]);
            hit.put("tags", Arrays.asList(catalog.titles[doc].split(" ")));
            Map<String, Object> offer = new LinkedHashMap<>();
            offer.put("currency", "EUR");
            offer.put("price", BigDecimal.valueOf(catalog.priceCents[doc], 2).toPlainString());
            offer.put("availability", doc % 7 == 0 ? "backorder" : "in_stock");
            offer.put("delivery_days", List.of(1 + doc % 3, 3 + doc % 5));
            offer.put("url", "https://shop.example.com/p/" + catalog.skus[doc].toLowerCase(Locale.ROOT)
                    + "?ref=search&q=" + q.replace(' ', '+'));
            hit.put("offer", offer);
            results.add(hit);
        }
        Map<String, Object> body = new LinkedHashMap<>();
        body.put("query", q);
        body.put("page", page);
        body.put("results", results);
        return JsonWriter.write(body);
    }
}

/** A small JSON serializer: maps, lists, strings, numbers, booleans. */
final class JsonWriter {
    static String write(Object value) {
        StringBuilder out = new StringBuilder(512);
        writeValue(out, value);
        return out.toString();
    }

    private static void writeValue(StringBuilder out, Object value) {
        if (value instanceof Map<?, ?> map) {
            out.append('{');
            boolean first = true;
            for (Map.Entry<?, ?> e : map.entrySet()) {
                if (!first) {
                    out.append(',');
                }
                first = false;
                writeString(out, String.valueOf(e.getKey()));
                out.append(':');
                writeValue(out, e.getValue());
            }
            out.append('}');
        } else if (value instanceof List<?> list) {
            out.append('[');
            for (int i = 0; i < list.size(); i++) {
                if (i > 0) {
                    out.append(',');
                }
                writeValue(out, list.get(i));
            }
            out.append(']');
        } else if (value instanceof String s) {
            writeString(out, s);
        } else if (value == null) {
            out.append("null");
        } else {
            out.append(value);
        }
    }

    private static void writeString(StringBuilder out, String s) {
        out.append('"');
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            switch (c) {
                case '"':
                    out.append("\\\"");
                    break;
                case '\\':
                    out.append("\\\\");
                    break;
                case '\n':
                    out.append("\\n");
                    break;
                default:
                    if (c < 0x20) {
                        out.append(String.format("\\u%04x", (int) c));
                    } else {
                        out.append(c);
                    }
            }
        }
        out.append('"');
    }
}

/** One line of a cart. */
final class LineItem {
    final int product;
    final int quantity;

    LineItem(int product, int quantity) {
        this.product = product;
        this.quantity = quantity;
    }
}

/** POST /checkout: price the cart, reserve stock, store the order. */
final class CheckoutService {
    private final Catalog catalog;
    private final PricingService pricing;
    private final InventoryService inventory;
    private final OrderRepository orders;

    CheckoutService(Catalog catalog, PricingService pricing, InventoryService inventory,
            OrderRepository orders) {
        this.catalog = catalog;
        this.pricing = pricing;
        this.inventory = inventory;
        this.orders = orders;
    }

    Response checkout(Request request) {
        List<LineItem> cart = new ArrayList<>();
        for (String item : request.param("items", "").split(",")) {
            int colon = item.indexOf(':');
            cart.add(new LineItem(Catalog.index(item.substring(0, colon)),
                    Integer.parseInt(item.substring(colon + 1))));
        }
        BigDecimal total = pricing.price(cart, request.param("coupon", ""));
        inventory.reserve(cart);
        long id = orders.save(cart, total);
        Map<String, Object> body = new LinkedHashMap<>();
        body.put("order", id);
        body.put("total", total.toPlainString());
        List<Object> lines = new ArrayList<>();
        for (LineItem line : cart) {
            lines.add(List.of(catalog.skus[line.product], line.quantity));
        }
        body.put("lines", lines);
        return Response.json(200, JsonWriter.write(body));
    }
}

/** A discount: a percentage off for a category, a SKU range, a quantity, maybe a coupon. */
final class PromotionRule {
    final int category;
    final String skuPrefix;
    final int minQuantity;
    final String coupon;
    final BigDecimal percent;

    PromotionRule(int category, String skuPrefix, int minQuantity, String coupon, BigDecimal percent) {
        this.category = category;
        this.skuPrefix = skuPrefix;
        this.minQuantity = minQuantity;
        this.coupon = coupon;
        this.percent = percent;
    }

    boolean matches(String sku, int category, int quantity, String coupon) {
        return sku.startsWith(skuPrefix) && this.category == category && quantity >= minQuantity
                && (this.coupon.isEmpty() || this.coupon.equals(coupon));
    }
}

/** Prices a cart: list price, every promotion rule that applies, tax. */
final class PricingService {
    private static final BigDecimal TAX = new BigDecimal("0.19");
    private final Catalog catalog;
    private final List<PromotionRule> rules = new ArrayList<>();

    PricingService(Catalog catalog) {
        this.catalog = catalog;
        // The promotions table has grown over the years; every rule is checked, every time.
        Random random = new Random(3);
        for (int i = 0; i < 5_000; i++) {
            rules.add(new PromotionRule(random.nextInt(Catalog.CATEGORIES.length),
                    Catalog.sku(random.nextInt(Catalog.PRODUCTS)).substring(0, 6), 1 + random.nextInt(3),
                    random.nextInt(10) == 0 ? "SPRING10" : "", BigDecimal.valueOf(1 + random.nextInt(15), 2)));
        }
    }

    BigDecimal price(List<LineItem> cart, String coupon) {
        BigDecimal subtotal = BigDecimal.ZERO;
        for (LineItem line : cart) {
            BigDecimal amount = BigDecimal.valueOf(catalog.priceCents[line.product], 2)
                    .multiply(BigDecimal.valueOf(line.quantity));
            String sku = catalog.skus[line.product];
            int category = catalog.categories[line.product];
            BigDecimal best = BigDecimal.ZERO; // the best discount applies
            for (PromotionRule rule : rules) {
                if (rule.matches(sku, category, line.quantity, coupon) && rule.percent.compareTo(best) > 0) {
                    best = rule.percent;
                }
            }
            subtotal = subtotal.add(amount.subtract(amount.multiply(best)).setScale(2, RoundingMode.HALF_EVEN));
        }
        return subtotal.add(subtotal.multiply(TAX)).setScale(2, RoundingMode.HALF_EVEN);
    }
}

/** Stock levels, and the ledger every reservation is written to. */
final class InventoryService {
    private final int[] stock;

    InventoryService() {
        stock = new int[Catalog.PRODUCTS];
        Arrays.fill(stock, 1000);
    }

    /**
     * Reserves the cart's stock. The ledger write (a slow remote call) happens
     * while holding the inventory's monitor, so concurrent checkouts queue up here.
     */
    synchronized void reserve(List<LineItem> cart) {
        for (LineItem line : cart) {
            stock[line.product] -= line.quantity;
            if (stock[line.product] < 0) {
                stock[line.product] += 1000; // restocked
            }
        }
        Downstream.call(5, 9); // the stock ledger
    }
}

/** The database: a single connection, so every statement waits for it. */
final class Database {
    private final ReentrantLock connection = new ReentrantLock();

    long execute(String sql, int minMillis, int maxMillis) {
        connection.lock();
        try {
            Downstream.call(minMillis, maxMillis);
            return sql.length();
        } finally {
            connection.unlock();
        }
    }
}

/** Orders: new ones are inserted, a day's are read for reports. */
final class OrderRepository {
    private final Database database;
    private final AtomicLong ids = new AtomicLong(100_000);
    /** The order history reports are computed from: day, category, amount per order. */
    final byte[] historyDay;
    final byte[] historyCategory;
    final int[] historyCents;

    OrderRepository(Database database, Catalog catalog) {
        this.database = database;
        int n = 260_000;
        historyDay = new byte[n];
        historyCategory = new byte[n];
        historyCents = new int[n];
        Random random = new Random(11);
        for (int i = 0; i < n; i++) {
            int product = random.nextInt(Catalog.PRODUCTS);
            historyDay[i] = (byte) (1 + random.nextInt(28));
            historyCategory[i] = (byte) catalog.categories[product];
            historyCents[i] = (int) catalog.priceCents[product] * (1 + random.nextInt(3));
        }
    }

    long save(List<LineItem> cart, BigDecimal total) {
        long id = ids.incrementAndGet();
        database.execute("INSERT INTO orders (id, lines, total) VALUES (" + id + ", " + cart.size()
                + ", " + total + ")", 4, 8);
        return id;
    }

    /** Indexes into the history of the day's orders (the first `limit`). */
    int[] findByDay(int day, int limit) {
        database.execute("SELECT * FROM orders WHERE day = " + day + " LIMIT " + limit, 3, 6);
        int[] rows = new int[limit];
        int n = 0;
        for (int i = 0; i < historyDay.length && n < limit; i++) {
            if (historyDay[i] == day) {
                rows[n++] = i;
            }
        }
        return Arrays.copyOf(rows, n);
    }
}

/** The totals cache's phases: fresh, then stale, then fresh again, each {@code millis} long. */
final class Phase {
    private final long millis;

    Phase(long millis) {
        this.millis = millis;
    }

    boolean totalsStale() {
        return (System.currentTimeMillis() / millis) % 2 == 1;
    }
}

/** GET /reports/daily: the day's orders as CSV, with per-category totals. */
final class ReportService {
    private static final int ROWS = 64;
    private final OrderRepository orders;
    private final Phase phase;
    private volatile long[] cachedTotals;

    ReportService(OrderRepository orders, Phase phase) {
        this.orders = orders;
        this.phase = phase;
        this.cachedTotals = recomputeTotals(); // warmed at start
    }

    Response daily(Request request) {
        int day = Integer.parseInt(request.param("day", "2024-05-01").substring(8));
        int[] rows = orders.findByDay(day, ROWS);
        long[] totals = cachedTotals;
        if (phase.totalsStale()) {
            // The slow path: the totals cache has expired, so every report
            // recomputes them from the whole order history.
            totals = recomputeTotals();
            cachedTotals = totals;
        }
        CsvWriter csv = new CsvWriter();
        csv.writeRow("order", "day", "category", "amount", "category_total");
        for (int row : rows) {
            int category = orders.historyCategory[row];
            csv.writeRow(Integer.toString(row), "2024-05-" + orders.historyDay[row],
                    Catalog.CATEGORIES[category],
                    BigDecimal.valueOf(orders.historyCents[row], 2).toPlainString(),
                    BigDecimal.valueOf(totals[category], 2).toPlainString());
        }
        return new Response(200, "text/csv", csv.chunks());
    }

    /** Revenue per category over the whole order history, outliers capped: two full scans. */
    long[] recomputeTotals() {
        int categories = Catalog.CATEGORIES.length;
        long[] sum = new long[categories];
        long[] count = new long[categories];
        for (int i = 0; i < orders.historyCents.length; i++) {
            int c = orders.historyCategory[i];
            long cents = orders.historyCents[i];
            sum[c] += cents;
            count[c]++;
        }
        long[] cap = new long[categories];
        for (int c = 0; c < categories; c++) {
            cap[c] = 3 * sum[c] / Math.max(1, count[c]);
        }
        // Orders above three times their category's mean count at that cap.
        long[] totals = new long[categories];
        for (int i = 0; i < orders.historyCents.length; i++) {
            int c = orders.historyCategory[i];
            long cents = orders.historyCents[i];
            totals[c] += cents > cap[c] ? cap[c] : cents;
        }
        return totals;
    }
}

/** CSV rows, each encoded into a buffer of its own. */
final class CsvWriter {
    /** Sized for the widest row ever seen; one per row, never reused. */
    private static final int ROW_BUFFER = 8 * 1024;
    private final List<byte[]> rows = new ArrayList<>();

    void writeRow(String... fields) {
        ByteArrayOutputStream row = new ByteArrayOutputStream(ROW_BUFFER);
        for (int i = 0; i < fields.length; i++) {
            if (i > 0) {
                row.write(',');
            }
            String field = fields[i];
            boolean quote = field.indexOf(',') >= 0 || field.indexOf('"') >= 0;
            if (quote) {
                field = '"' + field.replace("\"", "\"\"") + '"';
            }
            row.writeBytes(field.getBytes(StandardCharsets.UTF_8));
        }
        row.write('\n');
        rows.add(row.toByteArray());
    }

    List<byte[]> chunks() {
        return rows;
    }
}

/** Simulated remote calls and waits: sleeps, so they cost no CPU. */
final class Downstream {
    static void call(int minMillis, int maxMillis) {
        pause(minMillis + ThreadLocalRandom.current().nextInt(maxMillis - minMillis + 1));
    }

    static void pause(long millis) {
        if (millis <= 0) {
            return;
        }
        try {
            Thread.sleep(millis);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }
}
