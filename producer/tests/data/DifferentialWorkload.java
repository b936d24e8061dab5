import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.locks.ReentrantLock;
import java.util.function.IntToLongFunction;

/**
 * The JFR differential corpus' workload (producer/tests/jfr_differential.rs):
 * CPU on more threads than JFR's 5-thread sampler cap, allocation through a
 * lambda (hidden-class frames), monitor and ReentrantLock contention, and idle
 * pool workers parked on a Condition. Runs for args[0] seconds, then exits so
 * the recording (dumponexit / async-profiler's file) is written.
 */
public final class DifferentialWorkload {
    private static final Object MONITOR = new Object();
    private static final ReentrantLock LOCK = new ReentrantLock();
    private static volatile long sink;

    public static void main(String[] args) throws Exception {
        long seconds = Long.parseLong(args[0]);
        for (int i = 0; i < 7; i++) {
            start("diff-cpu-" + i, DifferentialWorkload::cpuLoop);
        }
        start("diff-alloc", DifferentialWorkload::allocLoop);
        for (int i = 0; i < 3; i++) {
            start("diff-sync-" + i, DifferentialWorkload::syncLoop);
            start("diff-lock-" + i, DifferentialWorkload::lockLoop);
        }
        // Idle workers: parked on a Condition (excluded from the park profile).
        ExecutorService idle = Executors.newFixedThreadPool(2);
        idle.submit(() -> sink++);
        idle.submit(() -> sink++);
        System.out.println("differential-workload pid " + ProcessHandle.current().pid());
        System.out.flush();
        Thread.sleep(TimeUnit.SECONDS.toMillis(seconds));
        System.exit(0);
    }

    private static void start(String name, Runnable body) {
        Thread t = new Thread(body, name);
        t.setDaemon(true);
        t.start();
    }

    private static void cpuLoop() {
        while (true) {
            sink += cpuBurn(200_000);
        }
    }

    static long cpuBurn(int iterations) {
        long acc = 17;
        for (int i = 0; i < iterations; i++) {
            acc = acc * 6364136223846793005L + 1442695040888963407L;
            acc ^= (acc >>> 29);
        }
        return acc;
    }

    private static void allocLoop() {
        IntToLongFunction allocator = n -> allocate(n);
        while (true) {
            sink += allocator.applyAsLong(64);
            pause(1);
        }
    }

    static long allocate(int count) {
        List<Object> keep = new ArrayList<>(count);
        for (int i = 0; i < count; i++) {
            keep.add(i % 3 == 0 ? new long[ThreadLocalRandom.current().nextInt(8, 4096)] : new byte[16 * 1024]);
        }
        return keep.size();
    }

    private static void syncLoop() {
        while (true) {
            syncContention();
        }
    }

    static void syncContention() {
        synchronized (MONITOR) {
            pause(2 + ThreadLocalRandom.current().nextInt(5));
        }
    }

    private static void lockLoop() {
        while (true) {
            lockContention();
        }
    }

    static void lockContention() {
        LOCK.lock();
        try {
            pause(2 + ThreadLocalRandom.current().nextInt(5));
        } finally {
            LOCK.unlock();
        }
    }

    private static void pause(long millis) {
        try {
            Thread.sleep(millis);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }
}
