import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.locks.ReentrantLock;

/**
 * Javelin's demo workload: four hot spots, one per profile type, each in its own
 * clearly named method so tests can assert where the profile points.
 *
 * - cpuBurn: pure computation (the CPU profile's hot method).
 * - allocate: short-lived arrays (the allocation profile's hot method).
 * - syncContention: threads fighting over a synchronized monitor (lock profile).
 * - lockContention: threads fighting over a ReentrantLock (park profile).
 *
 * The lock holders sleep while holding the lock, so contention costs little CPU
 * and cpuBurn stays the CPU profile's dominant frame.
 */
public final class JavelinDemo {
    private static final Object MONITOR = new Object();
    private static final ReentrantLock LOCK = new ReentrantLock();
    private static volatile long sink;

    public static void main(String[] args) throws Exception {
        System.out.println("javelin-demo pid " + ProcessHandle.current().pid());
        System.out.flush();
        start("demo-cpu", JavelinDemo::cpuLoop);
        start("demo-alloc", JavelinDemo::allocLoop);
        for (int i = 0; i < 3; i++) {
            start("demo-sync-" + i, JavelinDemo::syncLoop);
            start("demo-lock-" + i, JavelinDemo::lockLoop);
        }
        Thread.currentThread().join();
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

    /** The CPU hot spot: a tight arithmetic loop. */
    static long cpuBurn(int iterations) {
        long acc = 17;
        for (int i = 0; i < iterations; i++) {
            acc = acc * 6364136223846793005L + 1442695040888963407L;
            acc ^= (acc >>> 29);
        }
        return acc;
    }

    private static void allocLoop() {
        while (true) {
            sink += allocate(64);
            pause(2);
        }
    }

    /** The allocation hot spot: many short-lived 16 KiB arrays. */
    static long allocate(int count) {
        List<byte[]> keep = new ArrayList<>(count);
        for (int i = 0; i < count; i++) {
            byte[] block = new byte[16 * 1024];
            block[i % block.length] = (byte) i;
            keep.add(block);
        }
        return keep.size();
    }

    private static void syncLoop() {
        while (true) {
            syncContention();
        }
    }

    /** The monitor hot spot: hold a contended monitor for a few milliseconds. */
    static void syncContention() {
        synchronized (MONITOR) {
            pause(5 + ThreadLocalRandom.current().nextInt(5));
        }
    }

    private static void lockLoop() {
        while (true) {
            lockContention();
        }
    }

    /** The j.u.c. lock hot spot: hold a contended ReentrantLock for a few milliseconds. */
    static void lockContention() {
        LOCK.lock();
        try {
            pause(5 + ThreadLocalRandom.current().nextInt(5));
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
